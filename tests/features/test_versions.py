"""Versioning: every save is a version, diff between two, rollback makes a new version."""

from __future__ import annotations

from tests.api.support import assert_error_shape, rules_spec, wait_run
from tests.helpers import triage


def test_diff_lists_node_edge_queue_source_and_top_changes(client):
    v1 = triage()
    assert client.post("/workflows", json=v1).status_code == 201
    v2 = triage()
    v2["name"] = "Support triage v2"
    v2["nodes"] = [n for n in v2["nodes"] if n["id"] != "painter"]           # removed node
    v2["nodes"].append({"id": "translator", "type": "llm", "source": "gpt",    # added node
                        "config": {"prompt": "Translate: {text_result}", "output_key": "text_result"}})
    writer = next(n for n in v2["nodes"] if n["id"] == "writer")
    writer["config"]["prompt"] = "Answer in one line.\n\n{user_input}"        # changed fields
    writer["config"]["max_tokens"] = 100
    writer["position"] = {"x": 10, "y": 20}
    v2["edges"] = [e for e in v2["edges"] if e["from"] != "painter"]
    v2["edges"] = [e for e in v2["edges"] if not (e["from"] == "router" and e.get("condition") == "intent == 'image'")]
    for e in v2["edges"]:
        if e.get("condition") == "intent == 'both'":
            e["to"] = ["writer"]                                              # list target shrinks
    v2["edges"].append({"from": "writer", "to": "translator"})
    v2["queues"][0]["max_requests_per_minute"] = 60
    v2["queues"] = [q for q in v2["queues"] if q["id"] != "images"]
    v2["sources"] = [s for s in v2["sources"] if s["id"] != "dalle"]
    r = client.put("/workflows/support-triage", json=v2)
    assert r.status_code == 200 and r.json()["version"] == 2, r.text

    d = client.get("/workflows/support-triage/versions/1/diff/2")
    assert d.status_code == 200, d.text
    diff = d.json()
    assert (diff["from"], diff["to"]) == (1, 2)
    assert diff["nodes"]["added"] == ["translator"] and diff["nodes"]["removed"] == ["painter"]
    assert diff["nodes"]["changed"] == [{"id": "writer", "fields": ["config.max_tokens", "config.prompt",
                                                                     "position"]}]
    added = diff["edges"]["added"]
    removed = diff["edges"]["removed"]
    assert {"from": "writer", "to": "translator", "condition": None} in added and len(added) == 1
    assert {"from": "router", "to": "painter", "condition": "intent == 'image'"} in removed
    assert {"from": "router", "to": "painter", "condition": "intent == 'both'"} in removed  # from the list
    assert {"from": "painter", "to": "final", "condition": None} in removed
    assert {"from": "router", "to": "writer", "condition": "intent == 'both'"} not in removed
    assert diff["queues"] == {"added": [], "removed": ["images"],
                              "changed": [{"id": "llm", "fields": ["max_requests_per_minute"]}]}
    assert diff["sources"] == {"added": [], "removed": ["dalle"], "changed": []}
    assert diff["top"] == ["name"]

    back = client.get("/workflows/support-triage/versions/2/diff/1").json()
    assert back["nodes"]["added"] == ["painter"] and back["nodes"]["removed"] == ["translator"]
    same = client.get("/workflows/support-triage/versions/1/diff/1").json()
    assert same["nodes"] == {"added": [], "removed": [], "changed": []} and same["top"] == []
    assert_error_shape(client.get("/workflows/support-triage/versions/1/diff/9"), 404)
    assert_error_shape(client.get("/workflows/ghost/versions/1/diff/2"), 404)


def test_rollback_makes_a_new_version_and_runs_record_it(client):
    client.post("/workflows", json=rules_spec())
    v2 = rules_spec()
    v2["nodes"][1]["config"]["default"] = "changed"
    client.put("/workflows/rules-demo", json=v2)
    run2 = wait_run(client, client.post("/workflows/rules-demo/runs", json={"input": "x"}).json()["run_id"])
    assert (run2["workflow_version"], run2["state"]["intent"]) == (2, "changed")

    r = client.post("/workflows/rules-demo/rollback", json={"version": 1})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["version"] == 3 and body["spec"] == client.get("/workflows/rules-demo/versions/1").json()["spec"]
    assert client.get("/workflows/rules-demo").json()["version"] == 3
    versions = client.get("/workflows/rules-demo/versions").json()["items"]
    assert [v["version"] for v in versions] == [3, 2, 1]                    # history is kept
    assert versions[0]["spec_hash"] == versions[2]["spec_hash"]
    diff = client.get("/workflows/rules-demo/versions/2/diff/3").json()
    assert diff["nodes"]["changed"] == [{"id": "route", "fields": ["config.default"]}]

    run3 = wait_run(client, client.post("/workflows/rules-demo/runs", json={"input": "x"}).json()["run_id"])
    assert (run3["workflow_version"], run3["state"]["intent"]) == (3, "normal")

    # rolling back to what is already current writes nothing new
    assert client.post("/workflows/rules-demo/rollback", json={"version": 3}).json()["version"] == 3
    assert_error_shape(client.post("/workflows/rules-demo/rollback", json={"version": 7}), 404)
    assert_error_shape(client.post("/workflows/rules-demo/rollback", json={"version": 0}), 422)
    assert_error_shape(client.post("/workflows/rules-demo/rollback", json={}), 422)
    assert_error_shape(client.post("/workflows/ghost/rollback", json={"version": 1}), 404)
