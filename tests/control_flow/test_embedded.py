"""Workflow and map nodes, on_error edges and node retry, embedded (in-process API on SQLite)."""

from __future__ import annotations

import time

import pytest

from tests.api.conftest import api_env, client, make_client  # noqa: F401  (fixtures)
from tests.servers.http_api import HTTPAPIServer

from .specs import api_child, caught, child, mapper, parent


def save(client, spec: dict) -> dict:
    r = client.post("/workflows", json=spec)
    assert r.status_code == 201, r.text
    return r.json()


def run(client, workflow_id: str, run_input: dict, timeout: float = 60) -> dict:
    r = client.post(f"/workflows/{workflow_id}/runs", json={"input": run_input})
    assert r.status_code == 202, r.text
    run_id = r.json()["run_id"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = client.get(f"/runs/{run_id}").json()
        if record["status"] in ("succeeded", "failed", "cancelled"):
            return record
        time.sleep(0.05)
    raise AssertionError(f"run {run_id} did not end: {record}")


def test_parent_calls_child(client):
    save(client, child())
    save(client, parent())
    record = run(client, "cf-parent", {"user_input": "x", "metadata": {"who": "ann"}})
    assert record["status"] == "succeeded", record
    assert record["state"]["child_answer"] == "child saw hello ann"
    [kid] = record["children"]
    assert kid["workflow_id"] == "cf-child" and kid["status"] == "succeeded" and kid["node_id"] == "sub"
    child_record = client.get(f"/runs/{kid['run_id']}").json()
    assert child_record["parent_run_id"] == record["run_id"]
    assert [s["node_id"] for s in child_record["steps"]] == ["in", "out"]  # its own steps
    listed = client.get("/runs", params={"parent_run_id": record["run_id"]}).json()["items"]
    assert [r["run_id"] for r in listed] == [kid["run_id"]]
    trace = client.get(f"/runs/{record['run_id']}/trace").json()
    assert [c["run_id"] for c in trace["children"]] == [kid["run_id"]]
    assert client.get(f"/runs/{kid['run_id']}/trace").json()["parent_run_id"] == record["run_id"]


def test_pinned_version_is_run(client):
    save(client, child(prefix="v1"))
    save(client, child(prefix="v2"))
    save(client, parent(version=1))
    record = run(client, "cf-parent", {"metadata": {"who": "bo"}})
    assert record["state"]["child_answer"] == "v1 hello bo"
    assert record["children"][0]["workflow_version"] == 1


def test_map_over_50_items_keeps_order(client):
    save(client, child())
    save(client, mapper())
    items = [{"n": i} for i in range(50)]
    record = run(client, "cf-map", {"metadata": {"items": items}}, timeout=120)
    assert record["status"] == "succeeded", record["error"]
    assert record["state"]["answers"] == [f"child saw {i}" for i in range(50)]
    kids = record["children"]
    assert sorted(k["index"] for k in kids) == list(range(50))
    assert all(k["status"] == "succeeded" for k in kids)


def test_map_more_than_max_items_fails_the_step(client):
    save(client, child())
    save(client, mapper(max_items=3))
    record = run(client, "cf-map", {"metadata": {"items": [{"n": i} for i in range(4)]}})
    assert record["status"] == "failed"
    assert "holds 4 items, more than max_items (3)" in record["error"]
    assert record["children"] == []


def test_map_partial_failure_names_items_and_on_error_catches_it(client):
    with HTTPAPIServer() as api:
        # items 1 and 3 ask the server for a 500: their children fail
        save(client, api_child("cf-api-child", api.url, path="/status/{user_input}"))
        spec = mapper("cf-map-caught", "cf-api-child")
        spec["nodes"][1]["config"]["input"] = "{item.code}"
        spec["nodes"].append({"id": "handle", "type": "aggregator",
                              "config": {"fields": ["error"], "template": "{error.message}"}})
        spec["edges"].append({"from": "each", "to": "handle", "on_error": True})
        save(client, spec)
        codes = [200, 500, 200, 500]
        record = run(client, "cf-map-caught", {"metadata": {"items": [{"code": c} for c in codes]}})
    assert record["status"] == "succeeded", record["error"]
    message = record["state"]["final_output"]
    assert message.startswith("2 of 4 children of workflow 'cf-api-child' failed (items 1, 3)"), message
    assert {k["index"]: k["status"] for k in record["children"]} == {0: "succeeded", 1: "failed",
                                                                      2: "succeeded", 3: "failed"}
    assert record["state"]["error"]["node"] == "each"
    assert [s["node_id"] for s in record["steps"]] == ["in", "each", "handle"]


def test_failing_child_caught_by_on_error(client):
    with HTTPAPIServer() as api:
        save(client, api_child("cf-bad-child", api.url, path="/status/500"))
        save(client, caught("cf-caught", "cf-bad-child"))
        record = run(client, "cf-caught", {"user_input": "go"})
    assert record["status"] == "succeeded", record["error"]
    error = record["state"]["error"]
    kid = record["children"][0]
    assert error["node"] == "sub"
    assert kid["status"] == "failed" and kid["run_id"] in error["message"]
    assert record["state"]["final_output"].startswith("recovered from sub: workflow 'cf-bad-child': child run")
    assert "child_answer" not in record["state"]
    steps = {s["node_id"]: s["status"] for s in record["steps"]}
    assert steps == {"in": "succeeded", "sub": "failed", "handle": "succeeded"}  # `ok` not taken


def test_failing_child_without_on_error_fails_the_parent(client):
    with HTTPAPIServer() as api:
        save(client, api_child("cf-bad-child", api.url, path="/status/500"))
        save(client, parent(child_id="cf-bad-child"))
        record = run(client, "cf-parent", {"metadata": {"who": "x"}})
    assert record["status"] == "failed"
    assert f"child run {record['children'][0]['run_id']} failed" in record["error"]


def test_cancelling_a_parent_cancels_its_children(client):
    with HTTPAPIServer() as api:
        save(client, api_child("cf-slow-child", api.url, path="/slow?s=3"))
        save(client, mapper("cf-slow-map", "cf-slow-child"))
        r = client.post("/workflows/cf-slow-map/runs", json={"input": {"metadata": {"items": [{"n": 1}, {"n": 2}]}}})
        run_id = r.json()["run_id"]
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(client.get(f"/runs/{run_id}").json()["children"]) < 2:
            time.sleep(0.05)
        assert client.post(f"/runs/{run_id}/cancel").json()["status"] == "cancelled"
        kids = client.get(f"/runs/{run_id}").json()["children"]
        assert len(kids) == 2 and all(k["status"] == "cancelled" for k in kids), kids
        time.sleep(3.5)  # the children's calls end; nothing runs after them
        kids = client.get(f"/runs/{run_id}").json()["children"]
        assert all(k["status"] == "cancelled" for k in kids)
        for k in kids:  # each stopped at a step boundary: `out` never ran
            nodes = [s["node_id"] for s in client.get(f"/runs/{k['run_id']}").json()["steps"]]
            assert nodes in (["in"], ["in", "call"]), nodes


def test_node_retry_policy_counts_attempts_at_the_server(client):
    with HTTPAPIServer() as api:
        spec = api_child("cf-retry", api.url, path="/status/503")
        spec["nodes"][1]["retry"] = {"max_attempts": 4, "backoff_s": 0.05}
        save(client, spec)
        started = time.monotonic()
        record = run(client, "cf-retry", {})
        elapsed = time.monotonic() - started
        assert record["status"] == "failed"
        assert len(api.calls_to("/status/503")) == 4
        assert "after 4 attempts" in record["error"]
        assert elapsed >= 0.05 + 0.1 + 0.2  # backoff doubles, no jitter

        spec["id"] = "cf-retry-once"
        spec["nodes"][1]["retry"] = {"max_attempts": 1, "backoff_s": 0}
        save(client, spec)
        api.reset()
        assert run(client, "cf-retry-once", {})["status"] == "failed"
        assert len(api.calls_to("/status/503")) == 1


def test_on_error_catches_a_failing_node_and_keeps_secrets_out(client, api_env):
    api_env.setenv("CF_TOKEN", "sk-cf-secret-0123456789abcdef")
    with HTTPAPIServer(require_token="other") as api:
        spec = api_child("cf-api-fail", api.url, path="/echo")
        spec["sources"][0]["auth_env"] = "CF_TOKEN"
        spec["nodes"][2] = {"id": "out", "type": "aggregator", "config": {"fields": ["api_result"]}}
        spec["nodes"].append({"id": "fallback", "type": "aggregator",
                              "config": {"fields": ["error"], "template": "fallback: {error.message}"}})
        spec["edges"].append({"from": "call", "to": "fallback", "on_error": True})
        save(client, spec)
        record = run(client, "cf-api-fail", {})
    assert record["status"] == "succeeded"
    assert record["state"]["error"]["node"] == "call"
    assert "401" in record["state"]["error"]["message"]
    assert "sk-cf-secret" not in str(record)
    assert [s["node_id"] for s in record["steps"]] == ["in", "call", "fallback"]


def test_success_does_not_take_the_on_error_edge(client):
    save(client, child())
    save(client, caught("cf-caught-ok", "cf-child"))
    record = run(client, "cf-caught-ok", {"user_input": "fine"})
    assert record["status"] == "succeeded"
    assert record["state"]["final_output"] == {"child_answer": "child saw fine"}
    assert "error" not in record["state"] or record["state"]["error"] is None


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize("path", ["/workflows", "/workflows/validate"])
def test_missing_workflow_rejected(client, path):
    r = client.post(path, json=parent(child_id="nope"))
    assert r.status_code == 422
    assert {"path": "nodes[1].config.workflow", "message": "unknown workflow 'nope': save it first"} in r.json()["errors"]


def test_missing_version_rejected(client):
    save(client, child())
    r = client.post("/workflows", json=parent(version=7))
    assert r.status_code == 422
    assert r.json()["errors"] == [{"path": "nodes[1].config.version", "message": "workflow 'cf-child' has no version 7"}]


def test_recursion_rejected(client):
    save(client, child("cf-a"))
    save(client, parent("cf-b", child_id="cf-a"))
    # cf-a now calls cf-b, which calls cf-a
    r = client.put("/workflows/cf-a", json=mapper("cf-a", child_id="cf-b"))
    assert r.status_code == 422
    [problem] = r.json()["errors"]
    assert problem["path"] == "nodes[1].config.workflow"
    assert "cf-a -> cf-b -> cf-a" in problem["message"]
    # and a workflow naming itself
    r = client.post("/workflows/validate", json=parent("cf-self", child_id="cf-self"))
    assert r.status_code == 422 and "runs itself" in r.json()["errors"][0]["message"]


def test_on_error_edge_rules():
    from agentflow.graph.validate import validate

    spec = child()
    spec["nodes"].append({"id": "h", "type": "aggregator", "config": {"fields": ["error"]}})
    spec["nodes"].append({"id": "h2", "type": "aggregator", "config": {"fields": ["error"]}})
    spec["edges"] += [{"from": "out", "to": "h", "on_error": True, "condition": "user_input == 'x'"},
                      {"from": "out", "to": "h2", "on_error": True},
                      {"from": "out", "to": "ghost", "on_error": True}]
    problems = {(p.path, p.message) for p in validate(spec)}
    assert ("edges[1].condition", "an on_error edge takes no condition: it is taken exactly when its node fails") in problems
    assert ("edges[2].on_error", "node 'out' already has an on_error edge (edges[1])") in problems
    assert ("edges[3].to", "unknown node 'ghost'") in problems


def test_map_and_concurrency_key_templates_are_checked():
    from agentflow.graph.validate import validate

    spec = mapper()
    spec["nodes"][1]["config"].update(over="nothing_here", input="{item.n} {bogus}")
    spec["queues"] = [{"id": "q", "max_concurrency": 2, "concurrency_key": "{metadata.customer} {nope}"},
                      {"id": "r", "concurrency_key": "fixed"}]
    problems = {(p.path, p.message) for p in validate(spec)}
    assert ("nodes[1].config.over", "unknown state field 'nothing_here'") in problems
    assert ("nodes[1].config.input", "template references unknown state field {bogus}") in problems
    assert ("queues[0].concurrency_key", "template references unknown state field {nope}") in problems
    assert ("queues[1].concurrency_key", "a concurrency_key needs max_concurrency") in problems
    assert len(problems) == 5, problems


# ---------------------------------------------------------------- max_concurrency


def test_max_concurrency_embedded_per_key(make_client):
    from .probe import ConcurrencyServer, capped_workflow

    client = make_client(AGENTFLOW_EMBEDDED_WORKERS="8")
    with ConcurrencyServer() as api:
        save(client, capped_workflow("cf-cap", api.url, 2, keyed=True, hold_s=0.4))
        ids = [client.post("/workflows/cf-cap/runs", json={"input": {"metadata": {"customer": c}}}).json()["run_id"]
               for c in ["acme"] * 4 + ["globex"] * 4]
        deadline = time.monotonic() + 60
        seen_in_flight = 0
        while time.monotonic() < deadline:
            queue = client.get("/queues/cf-cap:q").json()
            seen_in_flight = max(seen_in_flight, queue["in_flight"])
            assert all(n <= 2 for n in queue["in_flight_by_key"].values()), queue
            if all(client.get(f"/runs/{i}").json()["status"] == "succeeded" for i in ids):
                break
            time.sleep(0.05)
        assert api.served == {"acme": 4, "globex": 4}
        assert api.peak == {"acme": 2, "globex": 2}  # each key capped at 2, independently
        assert api.peak_all == 4
        assert seen_in_flight >= 3
        queue = client.get("/queues/cf-cap:q").json()
        assert queue["in_flight"] == 0 and queue["limits"]["max_concurrency"] == 2
        metrics = client.get("/metrics").text
        assert 'agentflow_queue_limit_concurrency{queue="cf-cap:q"} 2.0' in metrics
        assert 'agentflow_queue_in_flight{queue="cf-cap:q"} 0.0' in metrics


# ---------------------------------------------------------------- the shipped examples


def test_examples_load_children_first_and_the_map_example_runs(make_client, api_env, openai_server):
    openai_server.responder = lambda req: "SUMMARY: " + req["messages"][-1]["content"].split(": ", 1)[1]
    api_env.setenv("OPENAI_API_KEY", "sk-test-examples-0000")
    api_env.setenv("OPENAI_BASE_URL", openai_server.base_url)
    client = make_client(AGENTFLOW_LOAD_EXAMPLES="1")
    ids = {w["id"] for w in client.get("/workflows").json()["items"]}
    # map_items.json sorts before subflow_child.json, which it runs: saved in a later round
    assert {"ticket-summary", "ticket-triage-subflow", "summarize-tickets", "order-lookup-fallback"} <= ids
    tickets = [{"text": f"ticket number {i}"} for i in range(5)]
    record = run(client, "summarize-tickets", {"metadata": {"tickets": tickets, "customer": "acme"}})
    assert record["status"] == "succeeded", record["error"]
    assert record["state"]["summaries"] == [f"SUMMARY: ticket number {i}" for i in range(5)]
    kid = client.get(f"/runs/{record['children'][3]['run_id']}").json()
    assert kid["input"]["metadata"] == {"tickets": tickets, "customer": "acme", "map_index": 3}
    record = run(client, "ticket-triage-subflow", {"user_input": "my parcel is late"})
    assert record["state"]["final_output"] == "Ticket from acme, in short: SUMMARY: my parcel is late"
