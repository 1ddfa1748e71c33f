"""Health, readiness, metrics, Studio fallback, and a database that goes away (503, never 500)."""

from __future__ import annotations

import pytest

from tests.api.support import assert_error_shape, rules_spec

DEAD_PG = "postgresql://agentflow:s3cretPassw0rd@127.0.0.1:1/agentflow"


def test_health(client):
    assert client.get("/health").json() == {"status": "ok", "mode": "embedded"}
    r = client.get("/health/ready")
    assert r.status_code == 200 and r.json() == {"ready": True, "checks": {"database": "ok"}}


def test_metrics(client):
    client.post("/workflows", json=rules_spec())
    client.get("/workflows/rules-demo")
    client.get("/workflows/nope")
    client.post("/workflows/execute", json={"spec": rules_spec()})
    text = client.get("/metrics").text
    assert 'agentflow_http_requests_total{method="GET",route="/workflows/{workflow_id}",status="200"}' in text
    assert 'route="/workflows/{workflow_id}",status="404"' in text
    assert "agentflow_http_request_duration_seconds_bucket" in text
    assert 'agentflow_runs{status="succeeded"}' in text
    assert "agentflow_runs_submitted_total" in text


def test_studio_fallback_page(make_client, monkeypatch):
    from agentflow.api import static

    monkeypatch.setattr(static, "studio_dir", lambda settings: None)
    client = make_client()
    r = client.get("/")
    assert r.status_code == 200 and "Studio is not built" in r.text and "make studio" in r.text
    assert "/docs" in r.text


def test_studio_served_after_api_routes(make_client, tmp_path):
    out = tmp_path / "studio-out"
    out.mkdir()
    (out / "index.html").write_text("<html>studio index</html>")
    (out / "app.js").write_text("console.log(1)")
    client = make_client(AGENTFLOW_STUDIO_DIR=str(out))
    assert "studio index" in client.get("/").text
    assert client.get("/app.js").text == "console.log(1)"
    assert client.get("/health").json()["status"] == "ok"  # API paths win
    assert_error_shape(client.get("/missing.js"), 404)


def _break_database(client, url: str = DEAD_PG):
    """Point every repository at a database where nothing listens."""
    from agentflow.api.deps import Services

    services = client.app.state.services
    broken = Services.build(services.settings.model_copy(update={"database_url": url}), services.dispatcher)
    client.app.state.services = broken
    return broken


def test_database_down_is_503_without_password(make_client):
    client = make_client()
    client.post("/workflows", json=rules_spec())
    _break_database(client)
    for method, path, body in (("GET", "/workflows", None), ("GET", "/workflows/rules-demo", None),
                               ("POST", "/workflows", rules_spec()), ("GET", "/runs/x", None),
                               ("POST", "/workflows/rules-demo/runs", {"input": "x"}),
                               ("GET", "/sources", None), ("POST", "/workflows/execute", {"spec": rules_spec()}),
                               ("GET", "/runs/x/events", None)):
        r = client.request(method, path, json=body)
        data = assert_error_shape(r, 503)
        assert data["detail"].startswith("database unavailable: "), data
        assert "s3cretPassw0rd" not in r.text
    ready = client.get("/health/ready")
    assert ready.status_code == 503
    assert ready.json()["ready"] is False and ready.json()["checks"]["database"].startswith("database unavailable")
    assert "s3cretPassw0rd" not in ready.text
    assert client.get("/health").status_code == 200
    assert client.get("/metrics").status_code == 200
    assert "agentflow_database_up 0.0" in client.get("/metrics").text


def test_sqlite_database_gone_is_503(make_client, tmp_path):
    client = make_client()
    _break_database(client, f"sqlite:///{tmp_path}/no/such/dir/x.db")
    data = assert_error_shape(client.get("/workflows"), 503)
    assert "database unavailable" in data["detail"]


def test_startup_fails_clearly_when_database_is_down(api_env):
    from agentflow.api.main import create_app
    from agentflow.settings import Settings
    from fastapi.testclient import TestClient

    api_env.setenv("DATABASE_URL", DEAD_PG)
    app = create_app(Settings())
    with pytest.raises(RuntimeError) as info:
        with TestClient(app):
            pass
    assert "cannot prepare the database" in str(info.value) and "s3cretPassw0rd" not in str(info.value)


def test_distributed_readiness_reports_missing_workers(make_client):
    from tests.api.test_runs_api import HoldingDispatcher

    class Dispatcher(HoldingDispatcher):
        def ping_broker(self):
            return True

        def ping_workers(self):
            return []

    client = make_client(dispatcher=Dispatcher(), REDIS_URL="redis://127.0.0.1:1/0")
    assert client.get("/health").json() == {"status": "ok", "mode": "distributed"}
    r = client.get("/health/ready")
    assert r.status_code == 503
    body = r.json()
    assert body["checks"] == {"database": "ok", "broker": "ok", "workers": "no Celery worker answered the ping"}
    assert body["detail"] == "no Celery worker answered the ping"
