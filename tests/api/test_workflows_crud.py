"""Workflow CRUD, versions and cursor pagination."""

from __future__ import annotations

from tests.api.support import assert_error_shape, rules_spec, triage


def test_create_get_versions(client):
    spec = rules_spec()
    r = client.post("/workflows", json=spec)
    assert r.status_code == 201, r.text
    rec = r.json()
    assert set(rec) >= {"id", "name", "description", "version", "spec", "created_at", "updated_at"}
    assert rec["id"] == "rules-demo" and rec["version"] == 1 and rec["spec"] == spec

    # identical save: no new version
    again = client.post("/workflows", json=spec).json()
    assert again["version"] == 1 and again["updated_at"] == rec["updated_at"]

    spec2 = rules_spec(name="Rules demo v2", description="second")
    rec2 = client.post("/workflows", json=spec2).json()
    assert rec2["version"] == 2 and rec2["name"] == "Rules demo v2" and rec2["description"] == "second"
    assert rec2["created_at"] == rec["created_at"] and rec2["updated_at"] >= rec["updated_at"]

    got = client.get("/workflows/rules-demo").json()
    assert got["version"] == 2 and got["spec"] == spec2

    versions = client.get("/workflows/rules-demo/versions").json()["items"]
    assert [v["version"] for v in versions] == [2, 1]
    assert all(len(v["spec_hash"]) == 64 and v["created_at"] for v in versions)
    assert versions[0]["spec_hash"] != versions[1]["spec_hash"]

    v1 = client.get("/workflows/rules-demo/versions/1").json()
    assert v1["version"] == 1 and v1["spec"] == spec and v1["spec_hash"] == versions[1]["spec_hash"]
    assert_error_shape(client.get("/workflows/rules-demo/versions/9"), 404)
    assert_error_shape(client.get("/workflows/rules-demo/versions/0"), 422)
    assert_error_shape(client.get("/workflows/nope/versions"), 404)


def test_invalid_save_lists_errors_and_writes_nothing(client):
    spec = rules_spec()
    spec["edges"].append({"from": "route", "to": "ghost"})
    spec["nodes"][2]["config"]["fields"] = []
    body = assert_error_shape(client.post("/workflows", json=spec), 422)
    assert {"edges[2].to", "nodes[2].config.fields"} <= {e["path"] for e in body["errors"]}
    assert_error_shape(client.get("/workflows/rules-demo"), 404)


def test_put(client):
    spec = rules_spec()
    r = client.put("/workflows/rules-demo", json=spec)
    assert r.status_code == 201 and r.json()["version"] == 1
    r = client.put("/workflows/rules-demo", json=rules_spec(name="renamed"))
    assert r.status_code == 200 and r.json()["version"] == 2 and r.json()["name"] == "renamed"
    body = assert_error_shape(client.put("/workflows/other-id", json=spec), 422)
    assert body["errors"] == [{"path": "id", "message": "must equal the workflow id in the path ('other-id')"}]
    assert_error_shape(client.get("/workflows/other-id"), 404)


def test_delete_keeps_runs(client):
    client.post("/workflows", json=rules_spec())
    run_id = client.post("/workflows/rules-demo/runs", json={"input": "hi"}).json()["run_id"]
    assert client.delete("/workflows/rules-demo").status_code == 204
    assert_error_shape(client.get("/workflows/rules-demo"), 404)
    assert_error_shape(client.get("/workflows/rules-demo/versions"), 404)
    assert_error_shape(client.delete("/workflows/rules-demo"), 404)
    assert client.get(f"/runs/{run_id}").status_code == 200
    assert [r["run_id"] for r in client.get("/workflows/rules-demo/runs").json()["items"]] == [run_id]
    # recreating starts again at version 1
    assert client.post("/workflows", json=rules_spec()).json()["version"] == 1


def test_pagination_across_pages(client):
    ids = [f"wf-{i:02d}" for i in range(11)]
    for wid in ids:
        assert client.post("/workflows", json=rules_spec(id=wid, name=f"Flow {wid}")).status_code == 201
    # touch one: it moves to the front
    client.put("/workflows/wf-03", json=rules_spec(id="wf-03", name="Flow touched"))

    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 3} | ({"cursor": cursor} if cursor else {})
        page = client.get("/workflows", params=params).json()
        pages += 1
        assert len(page["items"]) <= 3
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 4
    assert seen[0] == "wf-03"
    assert sorted(seen) == ids and len(seen) == len(set(seen))
    expected = ["wf-03"] + [w for w in reversed(ids) if w != "wf-03"]
    assert seen == expected
    item = client.get("/workflows", params={"limit": 1}).json()["items"][0]
    assert set(item) == {"id", "name", "description", "version", "updated_at"} and item["version"] == 2


def test_search_and_limits(client):
    client.post("/workflows", json=rules_spec(id="alpha", name="Support triage"))
    client.post("/workflows", json=rules_spec(id="beta", name="Billing"))
    client.post("/workflows", json=rules_spec(id="gamma_x", name="100% done"))
    assert [i["id"] for i in client.get("/workflows", params={"q": "TRIAGE"}).json()["items"]] == ["alpha"]
    assert [i["id"] for i in client.get("/workflows", params={"q": "bet"}).json()["items"]] == ["beta"]
    assert [i["id"] for i in client.get("/workflows", params={"q": "%"}).json()["items"]] == ["gamma_x"]
    assert client.get("/workflows", params={"q": "_"}).json()["items"][0]["id"] == "gamma_x"
    assert len(client.get("/workflows", params={"q": "_"}).json()["items"]) == 1
    assert_error_shape(client.get("/workflows", params={"limit": 201}), 422)
    assert client.get("/workflows", params={"limit": 200}).status_code == 200
    for bad in ("zzz", "bm90IGpzb24", "WzEsMiwzXQ"):  # junk, 'not json', [1,2,3]
        body = assert_error_shape(client.get("/workflows", params={"cursor": bad}), 422)
        assert body["errors"][0]["path"] == "query.cursor"


def test_reference_spec_round_trips(client):
    spec = triage()
    rec = client.post("/workflows", json=spec).json()
    assert rec["spec"] == spec
    assert client.get(f"/workflows/{spec['id']}").json()["spec"] == spec


def test_examples_loaded_at_startup(make_client, tmp_path, monkeypatch):
    import json

    from agentflow.api import examples

    folder = tmp_path / "examples"
    folder.mkdir()
    (folder / "rules.json").write_text(json.dumps(rules_spec(id="example-rules")))
    (folder / "broken.json").write_text("{not json")
    (folder / "invalid.json").write_text(json.dumps({"id": "bad"}))
    monkeypatch.setattr(examples, "EXAMPLES_DIR", folder)
    client = make_client(AGENTFLOW_LOAD_EXAMPLES="1")
    items = client.get("/workflows").json()["items"]
    assert [i["id"] for i in items] == ["example-rules"]
    # saved once: a restart does not add a version
    client2 = make_client(AGENTFLOW_LOAD_EXAMPLES="1")
    assert client2.get("/workflows/example-rules").json()["version"] == 1
