"""Issue-8 features in distributed mode: real Celery workers, Postgres and Redis.

A triage run started through the API (distributed dispatcher) streams its LLM tokens
from the node workers over Redis, leaves a complete trace, re-runs from a step through
the run driver without paying the earlier steps again, and its end is delivered to an
outbound webhook by the `agentflow.webhooks.deliver` task with a retry."""

from __future__ import annotations

import json
import time

import pytest

from agentflow.runs.webhooks import sign
from tests.api.support import sse_events, wait_run
from tests.distributed.conftest import api_client, dist_env, module_server, start_workers, workers  # noqa: F401
from tests.helpers import triage
from tests.servers.http_api import HTTPAPIServer
from tests.servers.openai_server import OpenAIServer

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(240)]
OUT_KEY = "dist-outbound-key-0123456789"


llm_server = module_server(OpenAIServer, stream_delay=0.03)
webhook_target = module_server(HTTPAPIServer)


@pytest.fixture(scope="module")
def services(dist_env, workers, llm_server, webhook_target):
    import psycopg

    with psycopg.connect(dist_env["DATABASE_URL"], autocommit=True) as conn:
        conn.execute("CREATE TABLE orders (id serial PRIMARY KEY, customer text, item text, status text)")
        conn.execute("INSERT INTO orders (customer, item, status) VALUES ('alice','keyboard','shipped'),"
                     "('alice','mouse','processing')")
    start_workers(dist_env, workers, {"driver": "runs,agentflow.control", "llm": "agentflow.llm",
                                      "misc": "agentflow.db,agentflow.api,agentflow.image"},
                  env={"OPENAI_API_KEY": "sk-dist-features-0000", "OPENAI_BASE_URL": llm_server.base_url,
                       "SHOP_DSN": dist_env["DATABASE_URL"], "AGENTFLOW_WEBHOOKS_ALLOW_PRIVATE": "1",
                       "AGENTFLOW_WEBHOOK_BACKOFF": "0.2", "AF_DIST_OUT_KEY": OUT_KEY})
    return llm_server, webhook_target


@pytest.fixture
def api(services, dist_env, monkeypatch):
    with api_client(dist_env, monkeypatch, ("OPENAI_API_KEY", "OPENAI_BASE_URL", "AGENTFLOW_WEBHOOKS_ALLOW_PRIVATE",
                                            "AF_DIST_OUT_KEY")) as client:
        yield client


def test_distributed_stream_trace_rerun_and_webhook(api, services, workers):
    llm, target = services
    assert api.get("/health").json()["mode"] == "distributed"
    assert api.post("/workflows", json=triage()).status_code == 201
    hook = api.post("/webhooks", json={"url": f"{target.url}/echo/dist", "events": ["run.succeeded"],
                                       "secret_env": "AF_DIST_OUT_KEY"}).json()
    target.fail_next(1, status=503)

    r = api.post("/workflows/support-triage/runs",
                 json={"input": {"user_input": "How do I reset my password?", "metadata": {"customer": "alice"}},
                       "stream": True})
    assert r.status_code == 202, r.text
    run_id = r.json()["run_id"]
    events = sse_events(api, f"/runs/{run_id}/events")
    assert events[-1][0] == "end" and events[-1][1]["status"] == "succeeded", (events[-1], workers.log("driver")[-2000:])
    tokens = [d for k, d in events if k == "token"]
    assert len(tokens) > 1 and {t["node_id"] for t in tokens} == {"writer"}     # from the llm worker, via Redis

    # the trace is complete: every step, with what it read and wrote, in order
    run = api.get(f"/runs/{run_id}").json()
    trace = api.get(f"/runs/{run_id}/trace").json()
    assert [s["node_id"] for s in trace["steps"]] == [s["node_id"] for s in run["steps"]]
    assert sorted(s["node_id"] for s in trace["steps"]) == ["final", "input", "orders", "router", "writer"]
    for s in trace["steps"]:
        assert s["status"] == "succeeded" and isinstance(s["input"], dict) and isinstance(s["output"], dict), s
    by = {s["node_id"]: s for s in trace["steps"]}
    assert by["writer"]["input"]["intent"] == "text" and by["writer"]["output"]["text_result"]
    assert by["orders"]["output"]["db_result"][0]["item"] == "keyboard"
    last = trace["steps"][-1]["state_after"]
    assert last["final_output"] == trace["final_state"]["final_output"]
    assert last["tokens_used"] == trace["final_state"]["tokens_used"] == sum(s["tokens"] for s in trace["steps"])

    # re-run from the writer through the run driver: only the writer calls the model again
    chats = lambda: [c for c in llm.calls if c.path.endswith("/chat/completions")]  # noqa: E731
    before = len(chats())
    r = api.post(f"/runs/{run_id}/rerun", json={"from_node": "writer", "state": {"user_input": "in one line"}})
    assert r.status_code == 202, r.text
    again = wait_run(api, r.json()["run_id"], timeout=60)
    assert again["status"] == "succeeded", again["error"]
    assert len(chats()) == before + 1 and "in one line" in json.dumps(chats()[-1].json)
    assert [s["status"] for s in again["steps"]].count("reused") == 3
    assert again["state"]["final_output"]["db_result"]

    # the end of the first run was delivered by the webhook task, on its second attempt
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        items = api.get(f"/webhooks/{hook['id']}/deliveries").json()["items"]
        mine = [d for d in items if d["run_id"] == run_id]
        if any(d["status"] == "delivered" for d in mine):
            break
        time.sleep(0.1)
    assert [(d["attempt"], d["status"], d["response_code"]) for d in mine] == [(2, "delivered", 200),
                                                                               (1, "failed", 503)], items
    call = next(c for c in reversed(target.calls_to("/echo/dist")) if json.loads(c.body)["run"]["run_id"] == run_id)
    assert call.headers["x-agentflow-signature"] == sign(OUT_KEY, call.headers["x-agentflow-timestamp"], call.body)
