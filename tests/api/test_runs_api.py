"""Runs through the API: start, poll, list, SSE, cancel, execute, LLM against the fake OpenAI server."""

from __future__ import annotations

import threading
import time

import pytest

from tests.api.support import assert_error_shape, rules_spec, sse_events, wait_run


def llm_spec(stream: bool = False) -> dict:
    return {
        "id": "llm-demo", "name": "LLM demo", "start_node": "input",
        "nodes": [
            {"id": "input", "type": "input"},
            {"id": "writer", "type": "llm", "source": "gpt",
             "config": {"prompt": "Reply to: {user_input}", "max_tokens": 50, "stream": stream}},
            {"id": "final", "type": "aggregator", "config": {"fields": ["text_result"]}},
        ],
        "edges": [{"from": "input", "to": "writer"}, {"from": "writer", "to": "final"}],
        "sources": [{"id": "gpt", "kind": "llm", "provider": "openai", "model": "gpt-4o-mini",
                     "api_key_env": "OPENAI_API_KEY", "base_url_env": "OPENAI_BASE_URL"}],
    }


@pytest.fixture
def openai_env(openai_server, api_env):
    api_env.setenv("OPENAI_API_KEY", "sk-test-api-key-0123456789")
    api_env.setenv("OPENAI_BASE_URL", openai_server.base_url)
    return openai_server


def test_run_lifecycle(client):
    assert client.post("/workflows", json=rules_spec()).status_code == 201
    r = client.post("/workflows/rules-demo/runs", json={"input": {"user_input": "hi", "metadata": {"tier": "paid"}}})
    assert r.status_code == 202, r.text
    assert r.json()["status"] == "queued" and r.headers["location"] == f"/runs/{r.json()['run_id']}"
    run = wait_run(client, r.json()["run_id"])
    assert run["status"] == "succeeded", run
    assert run["workflow_id"] == "rules-demo" and run["workflow_version"] == 1
    assert run["state"]["intent"] == "priority"
    assert run["state"]["final_output"] == {"intent": "priority", "user_input": "hi"}
    assert [s["node_id"] for s in run["steps"]] == ["input", "route", "final"]
    for step in run["steps"]:
        assert step["status"] == "succeeded" and step["started_at"] and step["finished_at"]
        assert {"tokens", "cost", "error", "node_type"} <= set(step)


def test_run_input_shorthand_and_defaults(client):
    client.post("/workflows", json=rules_spec())
    run_id = client.post("/workflows/rules-demo/runs", json={"input": "plain text"}).json()["run_id"]
    run = wait_run(client, run_id)
    assert run["state"]["user_input"] == "plain text" and run["state"]["intent"] == "normal"
    run_id = client.post("/workflows/rules-demo/runs").json()["run_id"]  # no body at all
    assert wait_run(client, run_id)["status"] == "succeeded"
    body = assert_error_shape(client.post("/workflows/rules-demo/runs", json={"input": {"metadata": "x"}}), 422)
    assert body["errors"][0]["path"] == "input.metadata"
    assert_error_shape(client.post("/workflows/rules-demo/runs", json={"inputs": {}}), 422)
    assert_error_shape(client.post("/workflows/ghost/runs", json={"input": "x"}), 404)


def test_run_uses_version_current_at_start(client):
    client.post("/workflows", json=rules_spec())
    first = wait_run(client, client.post("/workflows/rules-demo/runs", json={"input": "a"}).json()["run_id"])
    spec2 = rules_spec()
    spec2["nodes"][1]["config"]["default"] = "changed"
    client.put("/workflows/rules-demo", json=spec2)
    second = wait_run(client, client.post("/workflows/rules-demo/runs", json={"input": "a"}).json()["run_id"])
    assert (first["workflow_version"], first["state"]["intent"]) == (1, "normal")
    assert (second["workflow_version"], second["state"]["intent"]) == (2, "changed")


def test_list_runs_paginated(client):
    client.post("/workflows", json=rules_spec())
    client.post("/workflows", json=rules_spec(id="other"))
    ids = [client.post("/workflows/rules-demo/runs", json={"input": str(i)}).json()["run_id"] for i in range(5)]
    other = client.post("/workflows/other/runs", json={"input": "x"}).json()["run_id"]
    for run_id in ids + [other]:
        wait_run(client, run_id)
    seen, cursor = [], None
    while True:
        page = client.get("/workflows/rules-demo/runs", params={"limit": 2} | ({"cursor": cursor} if cursor else {})).json()
        seen += [r["run_id"] for r in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert sorted(seen) == sorted(ids) and len(seen) == 5
    assert "state" not in client.get("/runs").json()["items"][0]
    all_runs = [r["run_id"] for r in client.get("/runs", params={"limit": 50}).json()["items"]]
    assert set(all_runs) == set(ids) | {other}
    assert [r["run_id"] for r in client.get("/runs", params={"workflow_id": "other"}).json()["items"]] == [other]
    assert_error_shape(client.get("/runs", params={"cursor": "!!"}), 422)


def test_sse_replays_steps_then_end_for_finished_run(client):
    client.post("/workflows", json=rules_spec())
    run_id = client.post("/workflows/rules-demo/runs", json={"input": "hi"}).json()["run_id"]
    wait_run(client, run_id)
    events = sse_events(client, f"/runs/{run_id}/events")
    kinds = [k for k, _ in events]
    assert kinds == ["step", "step", "step", "end"], events
    assert [d["node_id"] for k, d in events if k == "step"] == ["input", "route", "final"]
    end = events[-1][1]
    assert end["status"] == "succeeded" and end["state"]["final_output"]["intent"] == "normal"
    assert_error_shape(client.get("/runs/nope/events"), 404)


def test_sse_live_run_with_tokens(client, openai_env):
    openai_env.stream_delay = 0.02
    client.post("/workflows", json=llm_spec(stream=True))
    run_id = client.post("/workflows/llm-demo/runs", json={"input": "hello there"}).json()["run_id"]
    events = sse_events(client, f"/runs/{run_id}/events")
    kinds = [k for k, _ in events]
    assert kinds[-1] == "end" and kinds.count("end") == 1, kinds
    assert events[-1][1]["status"] == "succeeded", events[-1]
    steps = [(d["node_id"], d["status"]) for k, d in events if k == "step"]
    for node in ("input", "writer", "final"):
        assert (node, "succeeded") in steps, steps
    assert len(steps) == len(set(steps)), steps  # replay + live never duplicates
    text = "".join(d["delta"] for k, d in events if k == "token")
    assert text == events[-1][1]["state"]["text_result"] and text.startswith("Answer:")


def test_llm_workflow_against_fake_openai(client, openai_env):
    openai_env.set_usage(12, 8)
    assert client.post("/workflows", json=llm_spec()).status_code == 201
    run_id = client.post("/workflows/llm-demo/runs", json={"input": "what is up"}).json()["run_id"]
    run = wait_run(client, run_id)
    assert run["status"] == "succeeded", run
    assert run["state"]["text_result"].startswith("Answer: Reply to: what is up")
    assert run["tokens_used"] == 20
    writer = next(s for s in run["steps"] if s["node_id"] == "writer")
    assert writer["tokens"] == 20
    assert "sk-test-api-key" not in str(run)


def test_failed_run_reports_error(client, api_env):
    api_env.delenv("OPENAI_API_KEY", raising=False)
    api_env.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    client.post("/workflows", json=llm_spec())
    run = wait_run(client, client.post("/workflows/llm-demo/runs", json={"input": "x"}).json()["run_id"])
    assert run["status"] == "failed" and run["error"]


def test_cancel_running_run(client, openai_env):
    openai_env.delay = 0.6
    client.post("/workflows", json=llm_spec())
    run_id = client.post("/workflows/llm-demo/runs", json={"input": "slow"}).json()["run_id"]
    wait_run(client, run_id, until=("running",))
    r = client.post(f"/runs/{run_id}/cancel")
    assert r.status_code == 200 and r.json() == {"run_id": run_id, "status": "cancelled"}
    time.sleep(1.0)  # the in-flight call ends; no further step starts
    run = client.get(f"/runs/{run_id}").json()
    assert run["status"] == "cancelled"
    assert "final" not in [s["node_id"] for s in run["steps"]]
    # cancelling again, or a finished run, just reports the status
    assert client.post(f"/runs/{run_id}/cancel").json()["status"] == "cancelled"
    assert_error_shape(client.post("/runs/nope/cancel"), 404)


def test_cancel_finished_run_keeps_status(client):
    client.post("/workflows", json=rules_spec())
    run_id = client.post("/workflows/rules-demo/runs", json={"input": "x"}).json()["run_id"]
    wait_run(client, run_id)
    assert client.post(f"/runs/{run_id}/cancel").json() == {"run_id": run_id, "status": "succeeded"}


class HoldingDispatcher:
    """A dispatcher that never starts runs (they stay queued) and records calls."""

    mode = "distributed"

    def __init__(self, fail: bool = False):
        from agentflow.runs.events import MemoryEventBus

        self.bus = MemoryEventBus()
        self.submitted: list[str] = []
        self.cancelled: list[str] = []
        self.fail = fail

    def submit(self, run_id):
        if self.fail:
            raise ConnectionError("broker at redis://:hunter2@127.0.0.1:6399/0 refused")
        self.submitted.append(run_id)

    def cancel(self, run_id):
        self.cancelled.append(run_id)

    def execute(self, run_id, timeout):
        self.submit(run_id)

    def close(self):
        pass


def test_cancel_queued_run_and_sse_ends(make_client):
    dispatcher = HoldingDispatcher()
    client = make_client(dispatcher=dispatcher)
    client.post("/workflows", json=rules_spec())
    run_id = client.post("/workflows/rules-demo/runs", json={"input": "x"}).json()["run_id"]
    assert dispatcher.submitted == [run_id]
    assert client.get(f"/runs/{run_id}").json()["status"] == "queued"

    result: dict = {}

    def follow():
        result["events"] = sse_events(client, f"/runs/{run_id}/events")

    reader = threading.Thread(target=follow)
    reader.start()
    time.sleep(0.3)
    assert client.post(f"/runs/{run_id}/cancel").json()["status"] == "cancelled"
    reader.join(timeout=5)
    assert not reader.is_alive()
    assert result["events"][-1][0] == "end" and result["events"][-1][1]["status"] == "cancelled"
    assert dispatcher.cancelled == [run_id]


def test_sse_notices_a_missed_end(make_client):
    """No `end` is ever published: the periodic status check closes the stream."""
    dispatcher = HoldingDispatcher()
    client = make_client(dispatcher=dispatcher)
    client.post("/workflows", json=rules_spec())
    run_id = client.post("/workflows/rules-demo/runs", json={"input": "x"}).json()["run_id"]
    store = client.app.state.services.runs

    def finish_quietly():
        time.sleep(0.3)
        store.mark_running(run_id)
        store.step_started(run_id, "input", "input")
        store.step_ended(run_id, "input", status="succeeded", duration_ms=1.0)
        store.finish(run_id, "succeeded", state={"user_input": "x", "tokens_used": 0, "cost": 0.0})

    threading.Thread(target=finish_quietly).start()
    started = time.monotonic()
    events = sse_events(client, f"/runs/{run_id}/events")
    assert time.monotonic() - started < 5
    assert [k for k, _ in events] == ["step", "end"], events
    assert events[-1][1]["status"] == "succeeded"


def test_submit_failure_is_503_and_run_marked_failed(make_client):
    client = make_client(dispatcher=HoldingDispatcher(fail=True))
    client.post("/workflows", json=rules_spec())
    body = assert_error_shape(client.post("/workflows/rules-demo/runs", json={"input": "x"}), 503)
    assert "hunter2" not in body["detail"] and "could not be queued" in body["detail"]
    runs = client.get("/runs").json()["items"]
    assert len(runs) == 1 and runs[0]["status"] == "failed"
    # the start was audited with the run's own insert; the entry says how it ended
    (entry,) = client.get("/audit", params={"action": "run.start"}).json()["items"]
    assert entry["target_id"] == runs[0]["run_id"] and entry["detail"]["status"] == 503
    assert "could not be queued" in entry["detail"]["error"] and "hunter2" not in str(entry)


def test_execute_synchronously(client):
    r = client.post("/workflows/execute", json={"spec": rules_spec(),
                                                "initial_state": {"user_input": "hey", "metadata": {"tier": "paid"}}})
    assert r.status_code == 200, r.text
    out = r.json()
    assert set(out) >= {"run_id", "status", "state", "error", "steps"}
    assert out["status"] == "succeeded" and out["error"] is None
    assert out["state"]["final_output"] == {"intent": "priority", "user_input": "hey"}
    assert [s["node_id"] for s in out["steps"]] == ["input", "route", "final"]
    stored = client.get(f"/runs/{out['run_id']}").json()
    assert stored["workflow_id"] == "rules-demo" and stored["status"] == "succeeded"
    # not saved as a workflow
    assert_error_shape(client.get("/workflows/rules-demo"), 404)


def test_execute_invalid_spec_lists_all_errors(client):
    spec = rules_spec()
    spec["start_node"] = "ghost"
    spec["nodes"][1]["config"]["rules"][0]["condition"] = "metadata.tier =="
    body = assert_error_shape(client.post("/workflows/execute", json={"spec": spec}), 422)
    assert {"start_node", "nodes[1].config.rules[0].condition"} <= {e["path"] for e in body["errors"]}
    assert client.get("/runs").json()["items"] == []


@pytest.mark.redis
def test_sse_over_redis_bus(make_client):
    """Distributed mode's event path: a worker publishes on Redis, the API streams it."""
    import os

    from tests.needs import need_redis

    url = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
    need_redis(url)
    from agentflow.runs.events import RedisEventBus

    dispatcher = HoldingDispatcher()
    dispatcher.bus = RedisEventBus(url)
    client = make_client(dispatcher=dispatcher)
    client.post("/workflows", json=rules_spec())
    run_id = client.post("/workflows/rules-demo/runs", json={"input": "x"}).json()["run_id"]
    store = client.app.state.services.runs
    worker_bus = RedisEventBus(url)

    def worker():
        time.sleep(0.4)
        store.mark_running(run_id)
        worker_bus.publish(run_id, "step", store.step_started(run_id, "input", "input"))
        worker_bus.publish(run_id, "token", {"node_id": "input", "delta": "hé"})
        worker_bus.publish(run_id, "step", store.step_ended(run_id, "input", status="succeeded", duration_ms=2.0))
        store.finish(run_id, "succeeded", state={"user_input": "x", "tokens_used": 0, "cost": 0.0})
        worker_bus.publish(run_id, "end", store.get(run_id))

    threading.Thread(target=worker).start()
    events = sse_events(client, f"/runs/{run_id}/events")
    assert [(k, d.get("status") or d.get("delta")) for k, d in events] == [
        ("step", "running"), ("token", "hé"), ("step", "succeeded"), ("end", "succeeded")], events
