"""Run trace replay: every step's input, delta and the state after it; re-run from a step."""

from __future__ import annotations

import pytest

from tests.api.support import assert_error_shape, wait_run
from tests.helpers import triage


def chat_calls(server) -> list:
    return [c for c in server.calls if c.path.endswith("/chat/completions")]


def start_triage(client, text: str) -> dict:
    assert client.post("/workflows", json=triage()).status_code == 201
    r = client.post("/workflows/support-triage/runs",
                    json={"input": {"user_input": text, "metadata": {"customer": "alice"}}})
    assert r.status_code == 202, r.text
    return wait_run(client, r.json()["run_id"], timeout=30)


def test_trace_of_the_triage_run_lists_every_step_with_its_deltas(client, triage_api):
    run = start_triage(client, "How do I reset my password?")
    assert run["status"] == "succeeded", run["error"]
    r = client.get(f"/runs/{run['run_id']}/trace")
    assert r.status_code == 200, r.text
    trace = r.json()
    assert (trace["run_id"], trace["workflow_id"], trace["workflow_version"], trace["status"]) == \
        (run["run_id"], "support-triage", 1, "succeeded")
    assert trace["initial_state"] == {"user_input": "How do I reset my password?", "tokens_used": 0, "cost": 0.0,
                                      "metadata": {"customer": "alice"}}
    steps = trace["steps"]
    order = [s["node_id"] for s in steps]
    # the same order as the run record, i.e. as the steps started
    assert order == [s["node_id"] for s in run["steps"]]
    assert order[0] == "input" and set(order[1:3]) == {"router", "orders"} and order[3:] == ["writer", "final"]
    assert [s["index"] for s in steps] == list(range(5))
    by = {s["node_id"]: s for s in steps}
    for s in steps:
        assert s["status"] == "succeeded" and s["error"] is None
        assert s["started_at"] and s["finished_at"] and s["duration_ms"] >= 0
        assert isinstance(s["input"], dict) and isinstance(s["output"], dict)
    # what each node read ...
    assert by["input"]["input"]["user_input"] == "How do I reset my password?"
    assert by["writer"]["input"]["intent"] == "text"
    assert [r["item"] for r in by["writer"]["input"]["db_result"]] == ["keyboard", "mouse"]
    assert "final_output" not in by["writer"]["input"]
    # ... what it wrote ...
    assert by["router"]["output"]["intent"] == "text" and by["router"]["output"]["tokens_used"] > 0
    assert by["writer"]["output"]["text_result"].startswith("Answer:")
    assert by["orders"]["output"]["db_result"][0]["item"] == "keyboard"
    assert by["router"]["tokens"] == by["router"]["output"]["tokens_used"]
    # ... and the state after it, reduced like GraphState (tokens add up, others replace)
    assert by["router"]["state_after"]["intent"] == "text"
    assert by["writer"]["state_after"]["tokens_used"] == by["router"]["tokens"] + by["writer"]["tokens"]
    final = trace["final_state"]
    last = steps[-1]["state_after"]
    assert final == run["state"]
    assert {k: v for k, v in last.items() if k != "cost"} == {k: v for k, v in final.items() if k != "cost"}
    assert last["cost"] == pytest.approx(final["cost"])
    assert final["tokens_used"] == sum(s["tokens"] for s in steps)
    # no secret in what we keep
    assert triage_api.calls and "sk-features-canary" not in r.text
    assert_error_shape(client.get("/runs/nope/trace"), 404)


def test_rerun_from_a_step_reuses_the_earlier_steps(client, triage_api):
    run = start_triage(client, "How do I reset my password?")
    assert run["status"] == "succeeded", run["error"]
    assert len(chat_calls(triage_api)) == 2                        # router + writer

    r = client.post(f"/runs/{run['run_id']}/rerun",
                    json={"from_node": "writer", "state": {"user_input": "Reset it in ONE line please"}})
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["status"] == "queued" and body["parent_run_id"] == run["run_id"] and body["run_id"] != run["run_id"]
    again = wait_run(client, body["run_id"], timeout=30)
    assert again["status"] == "succeeded", again["error"]
    assert (again["parent_run_id"], again["rerun_from"]) == (run["run_id"], "writer")
    assert again["workflow_version"] == run["workflow_version"]

    # only the writer called the model again: the router was not executed, nor paid, twice
    calls = chat_calls(triage_api)
    assert len(calls) == 3
    assert "Reset it in ONE line please" in calls[-1].json["messages"][-1]["content"]
    assert "Choose one of" not in calls[-1].json["messages"][-1]["content"]

    steps = [(s["node_id"], s["status"]) for s in again["steps"]]
    assert sorted(steps[:3]) == [("input", "reused"), ("orders", "reused"), ("router", "reused")]
    assert steps[3:] == [("writer", "succeeded"), ("final", "succeeded")]
    state = again["state"]
    assert state["intent"] == "text" and state["user_input"] == "Reset it in ONE line please"
    assert state["text_result"] == "Answer: " + calls[-1].json["messages"][-1]["content"][:40]
    assert [r["item"] for r in state["final_output"]["db_result"]] == ["keyboard", "mouse"]
    old = {s["node_id"]: s for s in run["steps"]}
    new = {s["node_id"]: s for s in again["steps"]}
    assert state["tokens_used"] == old["router"]["tokens"] + new["writer"]["tokens"]

    trace = client.get(f"/runs/{again['run_id']}/trace").json()
    assert trace["parent_run_id"] == run["run_id"] and trace["rerun_from"] == "writer"
    assert trace["initial_state"]["user_input"] == "How do I reset my password?"
    writer = next(s for s in trace["steps"] if s["node_id"] == "writer")
    assert writer["input"]["user_input"] == "Reset it in ONE line please"   # the edited state
    assert writer["input"]["intent"] == "text" and writer["input"]["db_result"]
    assert trace["steps"][-1]["state_after"]["final_output"] == state["final_output"]

    # edit a field and re-run only the join: no model call at all
    r = client.post(f"/runs/{run['run_id']}/rerun", json={"from_node": "final", "state": {"text_result": "edited"}})
    third = wait_run(client, r.json()["run_id"], timeout=30)
    assert third["status"] == "succeeded", third["error"]
    assert len(chat_calls(triage_api)) == 3
    assert third["state"]["final_output"]["text_result"] == "edited"
    assert [s["status"] for s in third["steps"]] == ["reused"] * 4 + ["succeeded"]

    # refusals
    assert_error_shape(client.post(f"/runs/{run['run_id']}/rerun", json={"from_node": "ghost"}), 422)
    bad = assert_error_shape(client.post(f"/runs/{run['run_id']}/rerun",
                                         json={"from_node": "writer", "state": {"nope": 1}}), 422)
    assert bad["errors"][0]["path"] == "state.nope"
    bad = assert_error_shape(client.post(f"/runs/{run['run_id']}/rerun",
                                         json={"from_node": "writer", "state": {"tokens_used": "many"}}), 422)
    assert bad["errors"][0]["path"] == "state.tokens_used"
    assert_error_shape(client.post("/runs/ghost/rerun", json={"from_node": "writer"}), 404)
    assert_error_shape(client.post(f"/runs/{run['run_id']}/rerun", json={}), 422)
