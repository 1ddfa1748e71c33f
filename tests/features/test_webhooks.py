"""Webhooks: signed inbound triggers start runs; outbound deliveries are signed and retried."""

from __future__ import annotations

import json
import time

import pytest

from agentflow.runs.webhooks import sign
from tests.api.support import assert_error_shape, rules_spec, wait_run

HOOK_KEY = "hook-key-0123456789abcdef"
OUT_KEY = "outbound-key-0123456789abcdef"


def signed(body: bytes, key: str = HOOK_KEY, at: float | None = None) -> dict[str, str]:
    ts = str(int(at if at is not None else time.time()))
    return {"X-AgentFlow-Timestamp": ts, "X-AgentFlow-Signature": sign(key, ts, body),
            "Content-Type": "application/json"}


@pytest.fixture
def hook(client, api_env):
    api_env.setenv("AF_TEST_HOOK_KEY", HOOK_KEY)
    assert client.post("/workflows", json=rules_spec()).status_code == 201
    r = client.post("/hooks", json={"workflow_id": "rules-demo", "secret_env": "AF_TEST_HOOK_KEY"})
    assert r.status_code == 201, r.text
    return r.json()


def test_inbound_hook_refuses_bad_signatures_and_starts_runs(client, hook, make_client):
    path = f"/hooks/{hook['id']}"
    assert hook["url"].endswith(path) and hook["url"].startswith("http")
    assert len(hook["id"]) > 20 and hook["workflow_id"] == "rules-demo" and hook["secret_env"] == "AF_TEST_HOOK_KEY"
    body = json.dumps({"user_input": "hello from outside", "metadata": {"tier": "paid"}}).encode()

    assert_error_shape(client.post(path, content=body), 401)                                  # unsigned
    assert_error_shape(client.post(path, content=body, headers=signed(body, key="wrong-key-123456")), 401)
    assert_error_shape(client.post(path, content=body + b" ", headers=signed(body)), 401)     # body changed
    stale = assert_error_shape(client.post(path, content=body, headers=signed(body, at=time.time() - 600)), 401)
    assert "5" in stale["detail"] or "300" in stale["detail"]
    assert client.get("/runs").json()["items"] == []                                         # nothing started

    r = client.post(path, content=body, headers=signed(body))
    assert r.status_code == 202, r.text
    run = wait_run(client, r.json()["run_id"])
    assert run["status"] == "succeeded" and run["workflow_id"] == "rules-demo" and run["workflow_version"] == 1
    assert run["state"]["user_input"] == "hello from outside" and run["state"]["intent"] == "priority"

    # the same signed request again: a 409 naming the run it started, not a second run
    again = client.post(path, content=body, headers=signed(body, at=int(r.request.headers["X-AgentFlow-Timestamp"])))
    assert assert_error_shape(again, 409)["run_id"] == run["run_id"]
    assert len(client.get("/runs").json()["items"]) == 1

    # any other JSON document is passed along as text and in metadata.webhook
    other = json.dumps({"event": "order.created", "id": 42}).encode()
    r = client.post(path, content=other, headers=signed(other))
    run = wait_run(client, r.json()["run_id"])
    assert run["state"]["user_input"] == '{"event": "order.created", "id": 42}'
    assert run["state"]["metadata"]["webhook"] == {"event": "order.created", "id": 42}
    assert len(client.get("/runs").json()["items"]) == 2

    assert_error_shape(client.post(path, content=b"not json", headers=signed(b"not json")), 422)
    assert_error_shape(client.post("/hooks/hk_unknown", content=body, headers=signed(body)), 404)
    assert [h["id"] for h in client.get("/hooks").json()["items"]] == [hook["id"]]
    assert client.get(path).json()["workflow_id"] == "rules-demo"
    assert_error_shape(client.post("/hooks", json={"workflow_id": "ghost", "secret_env": "X"}), 422)
    assert_error_shape(client.post("/hooks", json={"workflow_id": "rules-demo", "secret_env": "not a name"}), 422)
    server_key = assert_error_shape(client.post("/hooks", json={"workflow_id": "rules-demo",
                                                                "secret_env": "AGENTFLOW_JWT_SECRET"}), 422)
    assert server_key["errors"][0]["path"] == "secret_env"
    assert_error_shape(client.post("/webhooks", json={"url": "https://example.com/x",
                                                      "secret_env": "DATABASE_URL"}), 422)

    # the trigger needs no API token even where every other route does
    strict = make_client(AGENTFLOW_AUTH="required", AGENTFLOW_JWT_SECRET="features-jwt-secret-0123456789abcdef")
    assert strict.get("/hooks").status_code == 401
    third = json.dumps({"user_input": "third"}).encode()
    r = strict.post(path, content=third, headers=signed(third))
    assert r.status_code == 202, r.text

    assert client.delete(path).status_code == 204
    assert_error_shape(client.post(path, content=body, headers=signed(body)), 404)


def wait_deliveries(client, webhook_id: str, until, timeout: float = 15.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        items = client.get(f"/webhooks/{webhook_id}/deliveries").json()["items"]
        if until(items):
            return items
        if time.monotonic() > deadline:
            raise AssertionError(f"deliveries: {items}")
        time.sleep(0.05)


def test_outbound_webhook_is_signed_and_retried_until_delivered(client, api_env, http_api):
    api_env.setenv("AF_TEST_OUT_KEY", OUT_KEY)
    api_env.setenv("AGENTFLOW_WEBHOOK_BACKOFF", "0.05")
    client.post("/workflows", json=rules_spec())
    target = f"{http_api.url}/echo/agentflow"
    # private targets are refused unless the server allows them
    refused = assert_error_shape(client.post("/webhooks", json={"url": target}), 422)
    assert "AGENTFLOW_WEBHOOKS_ALLOW_PRIVATE" in refused["detail"]
    api_env.setenv("AGENTFLOW_WEBHOOKS_ALLOW_PRIVATE", "1")
    r = client.post("/webhooks", json={"url": target, "events": ["run.succeeded"], "workflow_id": "rules-demo",
                                        "secret_env": "AF_TEST_OUT_KEY"})
    assert r.status_code == 201, r.text
    webhook = r.json()
    failed_only = client.post("/webhooks", json={"url": target, "events": ["run.failed"]}).json()
    assert {w["id"] for w in client.get("/webhooks").json()["items"]} == {webhook["id"], failed_only["id"]}

    http_api.fail_next(2, status=500)
    run_id = client.post("/workflows/rules-demo/runs", json={"input": "notify me"}).json()["run_id"]
    assert wait_run(client, run_id)["status"] == "succeeded"
    items = wait_deliveries(client, webhook["id"], lambda items: any(d["status"] == "delivered" for d in items))
    assert [(d["attempt"], d["status"], d["response_code"]) for d in items] == \
        [(3, "delivered", 200), (2, "failed", 500), (1, "failed", 500)]
    assert all(d["run_id"] == run_id and d["event"] == "run.succeeded" for d in items)
    assert "retrying" in items[2]["error"]

    calls = http_api.calls_to("/echo/agentflow")
    assert len(calls) == 3
    last = calls[-1]
    ts, signature = last.headers["x-agentflow-timestamp"], last.headers["x-agentflow-signature"]
    assert signature == sign(OUT_KEY, ts, last.body) and abs(int(ts) - time.time()) < 60
    assert last.headers["x-agentflow-event"] == "run.succeeded"
    doc = json.loads(last.body)
    assert doc["event"] == "run.succeeded" and doc["webhook_id"] == webhook["id"]
    assert doc["run"]["run_id"] == run_id and doc["run"]["state"]["user_input"] == "notify me"
    assert client.get(f"/webhooks/{failed_only['id']}/deliveries").json()["items"] == []

    assert client.delete(f"/webhooks/{webhook['id']}").status_code == 204
    assert_error_shape(client.get(f"/webhooks/{webhook['id']}/deliveries"), 404)


def test_cancelled_run_is_reported_once(client, api_env, http_api):
    api_env.setenv("AGENTFLOW_WEBHOOKS_ALLOW_PRIVATE", "1")
    spec = {"id": "slow", "name": "slow", "start_node": "input",
            "nodes": [{"id": "input", "type": "input"},
                      {"id": "call", "type": "api", "source": "local", "config": {"path": "/slow", "query": {"s": "1"}}},
                      {"id": "final", "type": "aggregator", "config": {"fields": ["api_result"]}}],
            "edges": [{"from": "input", "to": "call"}, {"from": "call", "to": "final"}],
            "sources": [{"id": "local", "kind": "api", "base_url": http_api.url, "allow_private": True}]}
    assert client.post("/workflows", json=spec).status_code == 201
    webhook = client.post("/webhooks", json={"url": f"{http_api.url}/echo/cancel",
                                             "events": ["run.cancelled"]}).json()
    run_id = client.post("/workflows/slow/runs", json={"input": "x"}).json()["run_id"]
    deadline = time.monotonic() + 5
    while not http_api.calls_to("/slow") and time.monotonic() < deadline:
        time.sleep(0.02)
    busy = assert_error_shape(client.post(f"/runs/{run_id}/rerun", json={"from_node": "final"}), 409)
    assert "ended" in busy["detail"]                        # a re-run needs a run that has ended
    assert client.post(f"/runs/{run_id}/cancel").json()["status"] == "cancelled"
    items = wait_deliveries(client, webhook["id"], lambda items: items and items[0]["status"] == "delivered")
    wait_run(client, run_id)
    time.sleep(1.2)  # the executor notices the cancel after the slow step, and reports the end again
    items = client.get(f"/webhooks/{webhook['id']}/deliveries").json()["items"]
    assert [(d["event"], d["status"]) for d in items] == [("run.cancelled", "delivered")]
    assert len(http_api.calls_to("/echo/cancel")) == 1
