"""The same CRUD and a run against the real local PostgreSQL (fresh schema; skipped when unreachable)."""

from __future__ import annotations

import pytest

from tests.api.support import assert_error_shape, rules_spec, sse_events, triage, wait_run

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_client(make_client, pg_dsn):
    from agentflow.store.db import get_engine

    client = make_client(DATABASE_URL=pg_dsn)
    yield client
    get_engine(pg_dsn).dispose()  # pooled connections would hold the schema open


def test_workflows_crud_on_postgres(pg_client):
    client = pg_client
    spec = triage()
    assert client.post("/workflows", json=spec).json()["version"] == 1
    assert client.post("/workflows", json=spec).json()["version"] == 1
    spec["description"] = "changed"
    assert client.put(f"/workflows/{spec['id']}", json=spec).json()["version"] == 2
    assert client.get(f"/workflows/{spec['id']}").json()["spec"] == spec
    assert [v["version"] for v in client.get(f"/workflows/{spec['id']}/versions").json()["items"]] == [2, 1]

    ids = [f"pg-{i}" for i in range(7)]
    for wid in ids:
        client.post("/workflows", json=rules_spec(id=wid))
    seen, cursor = [], None
    while True:
        page = client.get("/workflows", params={"limit": 3} | ({"cursor": cursor} if cursor else {})).json()
        seen += [i["id"] for i in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == list(reversed(ids)) + [spec["id"]]
    assert [i["id"] for i in client.get("/workflows", params={"q": "SUPPORT"}).json()["items"]] == [spec["id"]]

    assert client.delete(f"/workflows/{spec['id']}").status_code == 204
    assert_error_shape(client.get(f"/workflows/{spec['id']}"), 404)


def test_sources_and_schedules_on_postgres(pg_client):
    client = pg_client
    src = {"id": "shop", "kind": "db", "driver": "postgresql", "dsn_env": "SHOP_DSN"}
    assert client.post("/sources", json=src).status_code == 201
    assert client.get("/sources").json()["items"] == [src]
    assert_error_shape(client.post("/sources", json=src), 409)
    client.post("/workflows", json=rules_spec())
    r = client.post("/schedules", json={"workflow_id": "rules-demo", "cron": "0 9 * * 1-5"})
    assert r.status_code == 201 and r.json()["next_run_at"]


def test_run_on_postgres(pg_client):
    client = pg_client
    client.post("/workflows", json=rules_spec())
    run_id = client.post("/workflows/rules-demo/runs", json={"input": {"user_input": "x", "metadata": {"tier": "paid"}}}).json()["run_id"]
    run = wait_run(client, run_id)
    assert run["status"] == "succeeded" and run["state"]["intent"] == "priority"
    events = sse_events(client, f"/runs/{run_id}/events")
    assert [k for k, _ in events] == ["step", "step", "step", "end"]
    assert client.get("/health/ready").json()["checks"]["database"] == "ok"
