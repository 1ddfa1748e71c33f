"""Real Celery workers on the local Redis and Postgres run the reference spec."""

from __future__ import annotations

import json
import time

import pytest

from tests.distributed.conftest import store_for, submit_run, wait_end
from tests.helpers import triage

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(240)]


@pytest.fixture(scope="module")
def shop(dist_env):
    import psycopg

    with psycopg.connect(dist_env["DATABASE_URL"], autocommit=True) as conn:
        conn.execute("CREATE TABLE orders (id serial PRIMARY KEY, customer text, item text, status text)")
        conn.execute("INSERT INTO orders (customer, item, status) VALUES ('alice','keyboard','shipped'),"
                     "('alice','mouse','processing'),('bob','desk','delivered')")
    return dist_env["DATABASE_URL"]


@pytest.fixture(scope="module")
def llm_server():
    from tests.servers.openai_server import OpenAIServer

    with OpenAIServer() as srv:
        yield srv


@pytest.fixture(scope="module")
def cluster(dist_env, workers, shop, llm_server):
    extra = {"OPENAI_API_KEY": "sk-test-dist-0000", "OPENAI_BASE_URL": llm_server.base_url, "SHOP_DSN": shop}
    dist_env.update(extra)
    workers.env.update(extra)
    workers.start("driver", "runs,agentflow.control", concurrency=2)
    workers.start("llm", "agentflow.llm", concurrency=2)
    workers.start("image", "agentflow.image", concurrency=1)
    workers.start("misc", "agentflow.db,agentflow.api", concurrency=1)
    workers.wait_ready(["driver", "llm", "image", "misc"])
    return workers


def submit(env, text, spec=None, customer="alice"):
    spec = spec or triage()
    run_id = submit_run(env, spec, {"user_input": text, "metadata": {"customer": customer}})
    return store_for(env), run_id


def test_both_intents_run_on_their_own_queues(cluster, dist_env):
    store, run_id = submit(dist_env, "explain and draw it, both please")
    rec = wait_end(store, run_id)
    assert rec["status"] == "succeeded", (rec["error"], cluster.log("driver")[-3000:])
    steps = {s["node_id"]: s for s in rec["steps"]}
    assert steps["writer"]["queue"] == "agentflow.llm" and steps["writer"]["worker"].startswith("llm@")
    assert steps["painter"]["queue"] == "agentflow.image" and steps["painter"]["worker"].startswith("image@")
    assert steps["orders"]["queue"] == "agentflow.db" and steps["orders"]["worker"].startswith("misc@")
    assert steps["router"]["queue"] == "agentflow.llm"
    assert steps["final"]["queue"] == "runs" and steps["final"]["worker"].startswith("driver@")
    assert [s["node_id"] for s in rec["steps"]].count("final") == 1
    final = rec["state"]["final_output"]
    assert final["intent"] == "both" and final["text_result"] and final["image_result"]
    assert [r["item"] for r in final["db_result"]] == ["keyboard", "mouse"]


@pytest.mark.parametrize("text, intent", [("how do I log in?", "text"), ("draw a cat picture", "image")])
def test_single_intents(cluster, dist_env, text, intent):
    store, run_id = submit(dist_env, text)
    rec = wait_end(store, run_id)
    assert rec["status"] == "succeeded", rec["error"]
    assert rec["state"]["intent"] == intent


def test_failing_provider_is_recorded(cluster, dist_env, llm_server):
    spec = triage()
    spec["id"] = "triage-failing"
    spec["sources"][0]["max_retries"] = 1
    llm_server.fail_next(2, status=503)
    store, run_id = submit(dist_env, "hello", spec=spec)
    rec = wait_end(store, run_id)
    assert rec["status"] == "failed"
    assert "router" in rec["error"] and "503" in rec["error"]
    assert "sk-test-dist-0000" not in json.dumps(rec)


ROUTER, WRITER = "Choose one of", "Answer the customer briefly"  # what their prompts say


def _slow_writer(seconds, marker=WRITER):
    from tests.servers.openai_server import default_responder

    def responder(req):
        text = json.dumps(req.get("messages"))
        if marker in text:
            time.sleep(seconds)
        return default_responder(req)

    return responder


def _calls(server, marker):
    return [c for c in server.calls if c.path.endswith("/chat/completions") and marker in json.dumps(c.json)]


def _wait_for(predicate, timeout=30, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.parametrize("slow", [WRITER, ROUTER], ids=["during-writer", "during-router"])
def test_driver_killed_mid_run_resumes_without_paying_twice(cluster, dist_env, llm_server, slow):
    """Killed during the router, the driver has stored no checkpoint yet (they are written
    after remote steps): the new one reads the finished input step back instead of running
    and recording it again."""
    llm_server.reset()
    llm_server.responder = _slow_writer(4, slow)
    name = f"driver-{'w' if slow == WRITER else 'r'}"
    try:
        store, run_id = submit(dist_env, "how do I reset my password?")
        _wait_for(lambda: _calls(llm_server, slow), what="the slow call")
        cluster.kill("driver")                      # the run driver dies while that call is in flight
        cluster.start(name, "runs,agentflow.control", concurrency=2)
        cluster.wait_ready([name])
        rec = wait_end(store, run_id, timeout=120)  # redelivered after the visibility timeout
    finally:
        llm_server.responder = _slow_writer(0)
        cluster.kill(name)
        cluster.start("driver", "runs,agentflow.control", concurrency=2)
        cluster.wait_ready(["driver"])
    assert rec["status"] == "succeeded", rec["error"]
    assert rec["attempts"] >= 2, "the run was driven twice"
    assert len(_calls(llm_server, ROUTER)) == 1, "router paid once"
    assert len(_calls(llm_server, WRITER)) == 1, "writer paid once"
    done = [s for s in rec["steps"] if s["status"] == "succeeded"]
    assert sorted(s["node_id"] for s in done) == ["final", "input", "orders", "router", "writer"]
    assert any(s["worker"].startswith(f"{name}@") for s in done), "the new driver finished the run"


def test_node_worker_killed_mid_step_is_retried_elsewhere(cluster, dist_env, llm_server):
    llm_server.reset()
    llm_server.responder = _slow_writer(3)
    try:
        store, run_id = submit(dist_env, "what are your opening hours?")
        _wait_for(lambda: _calls(llm_server, "Answer the customer briefly"), what="writer call")
        cluster.kill("llm")                         # the worker running writer dies mid-call
        cluster.start("llm2", "agentflow.llm", concurrency=2)
        cluster.wait_ready(["llm2"])
        rec = wait_end(store, run_id, timeout=120)
    finally:
        llm_server.responder = _slow_writer(0)
    assert rec["status"] == "succeeded", rec["error"]
    assert len(_calls(llm_server, "Choose one of")) == 1, "the finished router step was not paid again"
    writer_steps = [s for s in rec["steps"] if s["node_id"] == "writer"]
    assert [s["status"] for s in writer_steps][-1] == "succeeded"
    assert writer_steps[-1]["worker"].startswith("llm2@")
    # the interrupted attempt never finished, so exactly one writer step succeeded
    assert sum(s["status"] == "succeeded" for s in writer_steps) == 1
