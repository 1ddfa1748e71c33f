"""An embedded server restarted with runs left behind: queued ones run, cut-off ones fail with a reason."""

import time

from fastapi.testclient import TestClient

from agentflow.settings import get_settings
from agentflow.store.db import migrate, session_factory
from agentflow.store.runs import RunStore
from tests.helpers import rules_spec


def test_restart_resumes_queued_and_closes_cut_off_runs(af_home, monkeypatch):
    monkeypatch.setenv("AGENTFLOW_LOAD_EXAMPLES", "0")
    get_settings.cache_clear()
    url = get_settings().db_url
    migrate(url)
    store = RunStore(session_factory(url))
    queued = store.create(rules_spec(), {"user_input": "hi", "metadata": {"tier": "paid"}})
    cut = store.create(rules_spec(), {"user_input": "hi"})
    store.mark_running(cut)

    from agentflow.api.main import create_app

    with TestClient(create_app()) as client:
        deadline = time.time() + 20
        while time.time() < deadline and client.get(f"/runs/{queued}").json()["status"] != "succeeded":
            time.sleep(0.1)
        assert client.get(f"/runs/{queued}").json()["status"] == "succeeded"
        lost = client.get(f"/runs/{cut}").json()
        assert lost["status"] == "failed" and "server stopped" in lost["error"]


def test_sample_shop_is_ready_for_the_example(af_home, monkeypatch):
    monkeypatch.delenv("AGENTFLOW_SAMPLE_DSN", raising=False)
    monkeypatch.setenv("AGENTFLOW_LOAD_EXAMPLES", "1")
    get_settings.cache_clear()
    from agentflow.api.main import create_app

    with TestClient(create_app()) as client:
        r = client.post("/workflows/order-status/runs", json={"input": {"user_input": "where is it?",
                                                                         "metadata": {"customer": "globex"}}})
        assert r.status_code == 202, r.text
        run_id = r.json()["run_id"]
        deadline = time.time() + 20
        while time.time() < deadline and client.get(f"/runs/{run_id}").json()["status"] in ("queued", "running"):
            time.sleep(0.1)
        rec = client.get(f"/runs/{run_id}").json()
        assert rec["status"] == "succeeded", rec["error"]
        items = [row["item"] for row in rec["state"]["db_result"]]
        assert items == ["Hyperdrive", "Flux capacitor"]
