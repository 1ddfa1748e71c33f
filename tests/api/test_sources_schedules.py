"""Sources and schedules CRUD."""

from __future__ import annotations

from tests.api.support import assert_error_shape, rules_spec

LLM = {"id": "gpt", "kind": "llm", "provider": "openai", "model": "gpt-4o-mini",
       "api_key_env": "OPENAI_API_KEY", "base_url_env": "OPENAI_BASE_URL"}
DB = {"id": "shop", "kind": "db", "driver": "postgresql", "dsn_env": "SHOP_DSN"}
API = {"id": "crm", "kind": "api", "base_url": "https://crm.example.com/v1", "auth_env": "CRM_TOKEN"}


def test_sources_crud(client):
    for source in (LLM, DB, API):
        r = client.post("/sources", json=source)
        assert r.status_code == 201, r.text
        assert r.json() == source
    assert_error_shape(client.post("/sources", json=LLM), 409)
    assert client.get("/sources/gpt").json() == LLM
    items = client.get("/sources").json()["items"]
    assert [s["id"] for s in items] == ["crm", "gpt", "shop"]
    assert [s["id"] for s in client.get("/sources", params={"kind": "db"}).json()["items"]] == ["shop"]

    page1 = client.get("/sources", params={"limit": 2}).json()
    page2 = client.get("/sources", params={"limit": 2, "cursor": page1["next_cursor"]}).json()
    assert [s["id"] for s in page1["items"] + page2["items"]] == ["crm", "gpt", "shop"]
    assert page2["next_cursor"] is None

    changed = {**LLM, "model": "gpt-4o"}
    r = client.put("/sources/gpt", json=changed)
    assert r.status_code == 200 and r.json()["model"] == "gpt-4o"
    r = client.put("/sources/new-one", json={**DB, "id": "new-one"})
    assert r.status_code == 201 and r.json()["id"] == "new-one"
    body = assert_error_shape(client.put("/sources/x", json={k: v for k, v in DB.items() if k != "id"}), 422)
    assert body["errors"] == [{"path": "id", "message": "field required"}]
    body = assert_error_shape(client.put("/sources/other", json=LLM), 422)
    assert body["errors"][0]["path"] == "id"

    assert client.delete("/sources/gpt").status_code == 204
    assert_error_shape(client.get("/sources/gpt"), 404)
    assert_error_shape(client.delete("/sources/gpt"), 404)


def test_sources_reject_unknown_fields_and_secrets(client):
    body = assert_error_shape(client.post("/sources", json={**LLM, "api_key": "sk-live-123"}), 422)
    assert body["errors"] == [{"path": "api_key", "message": "unknown field"}]
    assert "sk-live-123" not in str(body)
    body = assert_error_shape(client.post("/sources", json={**LLM, "api_key_env": "sk-live-123"}), 422)
    assert body["errors"][0]["path"] == "api_key_env"
    body = assert_error_shape(client.post("/sources", json={**API, "base_url": "https://u:pw@crm.example.com"}), 422)
    assert body["errors"][0]["path"] == "base_url"
    body = assert_error_shape(client.post("/sources", json={"id": "x", "kind": "ftp"}), 422)
    assert body["errors"][0]["path"] == "kind"
    body = assert_error_shape(client.post("/sources", json={"id": "x", "kind": "db", "driver": "oracle"}), 422)
    assert {e["path"] for e in body["errors"]} == {"driver", "dsn_env"}
    assert_error_shape(client.post("/sources", json=["not", "an", "object"]), 422)
    assert client.get("/sources").json()["items"] == []


def test_schedules_crud(client):
    client.post("/workflows", json=rules_spec())
    r = client.post("/schedules", json={"workflow_id": "rules-demo", "cron": "*/5 * * * *", "input": "tick"})
    assert r.status_code == 201, r.text
    sched = r.json()
    assert sched["input"] == {"user_input": "tick", "metadata": {}}
    assert sched["enabled"] is True and sched["next_run_at"] and sched["interval_seconds"] is None

    r = client.put(f"/schedules/{sched['id']}", json={"workflow_id": "rules-demo", "interval_seconds": 60,
                                                      "input": {"user_input": "x"}, "enabled": False})
    assert r.status_code == 200
    assert r.json()["interval_seconds"] == 60 and r.json()["cron"] is None and r.json()["next_run_at"] is None
    assert client.get(f"/schedules/{sched['id']}").json()["enabled"] is False
    assert [s["id"] for s in client.get("/schedules").json()["items"]] == [sched["id"]]
    assert client.get("/schedules", params={"workflow_id": "other"}).json()["items"] == []

    assert client.delete(f"/schedules/{sched['id']}").status_code == 204
    assert_error_shape(client.get(f"/schedules/{sched['id']}"), 404)
    assert_error_shape(client.put(f"/schedules/{sched['id']}", json={"workflow_id": "rules-demo", "cron": "0 * * * *"}), 404)


def test_schedule_validation(client):
    client.post("/workflows", json=rules_spec())
    body = assert_error_shape(client.post("/schedules", json={"workflow_id": "rules-demo", "cron": "every day"}), 422)
    assert body["errors"][0]["path"] == "cron"
    assert_error_shape(client.post("/schedules", json={"workflow_id": "rules-demo"}), 422)
    assert_error_shape(client.post("/schedules", json={"workflow_id": "rules-demo", "cron": "0 * * * *",
                                                       "interval_seconds": 5}), 422)
    assert_error_shape(client.post("/schedules", json={"workflow_id": "rules-demo", "interval_seconds": 0}), 422)
    body = assert_error_shape(client.post("/schedules", json={"workflow_id": "ghost", "cron": "0 * * * *"}), 422)
    assert body["errors"] == [{"path": "workflow_id", "message": "unknown workflow"}]


def test_source_with_malformed_url_is_422(client):
    for url in ("http://]bad", "https://host:notaport/x"):
        body = assert_error_shape(client.post("/sources", json={**API, "base_url": url}), 422)
        assert body["errors"][0]["path"] == "base_url"
