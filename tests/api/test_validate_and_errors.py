"""POST /workflows/validate, GET /schema, and the error shape of every kind of bad request."""

from __future__ import annotations

import json

from tests.api.support import assert_error_shape, rules_spec, triage


def test_reference_spec_is_valid(client):
    r = client.post("/workflows/validate", json=triage())
    assert r.status_code == 200
    assert r.json() == {"valid": True, "errors": []}


def test_invalid_spec_lists_every_problem_with_paths(client):
    spec = triage()
    spec["nodes"][1]["source"] = "dalle"              # wrong kind for a router
    spec["nodes"][2]["config"]["temprature"] = 1      # unknown config key
    spec["edges"][2]["condition"] = "intent === 'x'"  # does not parse
    spec["edges"].append({"from": "final", "to": "nowhere"})
    r = client.post("/workflows/validate", json=spec)
    body = assert_error_shape(r, 422)
    assert body["valid"] is False
    paths = {e["path"] for e in body["errors"]}
    assert {"nodes[1].source", "nodes[2].config.temprature", "edges[2].condition", "edges[8].to"} <= paths, paths
    assert len(body["errors"]) >= 4


def test_validate_non_object(client):
    body = assert_error_shape(client.post("/workflows/validate", json=[1, 2]), 422)
    assert body["errors"][0]["path"] == ""


def test_schema(client):
    r = client.get("/schema")
    assert r.status_code == 200
    schema = r.json()
    assert schema["title"] == "WorkflowSpec" and "nodes" in schema["properties"]


def test_malformed_json_is_422_not_500(client):
    for path in ("/workflows/validate", "/workflows", "/sources", "/workflows/execute", "/schedules"):
        body = assert_error_shape(client.post(path, content=b'{"id": "x",', headers={"content-type": "application/json"}), 422)
        assert "malformed JSON" in body["detail"], (path, body)


def test_nan_and_non_utf8_are_rejected(client):
    assert_error_shape(client.post("/workflows/validate", content=b'{"id": NaN}'), 422)
    assert_error_shape(client.post("/workflows/execute", content=b'{"spec": {}, "initial_state": {"x": Infinity}}',
                                   headers={"content-type": "application/json"}), 422)
    assert_error_shape(client.post("/workflows/validate", content=b'{"id": "\xff\xfe"}'), 422)


def test_empty_body(client):
    assert_error_shape(client.post("/workflows/validate", content=b""), 422)
    assert_error_shape(client.post("/workflows", content=b"  "), 422)


def test_json_without_content_type_is_accepted(client):
    r = client.post("/workflows/execute", content=json.dumps({"spec": rules_spec()}).encode())
    assert r.status_code == 200, r.text


def test_deep_nesting_is_4xx(client):
    deep = b"[" * 200_000 + b"]" * 200_000
    for path in ("/workflows/validate", "/workflows", "/workflows/execute", "/sources"):
        r = client.post(path, content=deep, headers={"content-type": "application/json"})
        assert 400 <= r.status_code < 500, (path, r.status_code, r.text[:200])
        assert_error_shape(r, r.status_code)
    # Nested just under the parser's limit, inside fields that accept any JSON.
    for depth in (50, 95, 400, 900):
        nested: object = "leaf"
        for _ in range(depth):
            nested = {"k": nested}
        spec = rules_spec(id=f"deep-{depth}")
        spec["nodes"][0]["config"] = {"defaults": {"x": nested}}
        for path, body in (("/workflows/validate", spec), ("/workflows", spec),
                           ("/workflows/execute", {"spec": rules_spec(), "initial_state": {"metadata": nested}})):
            r = client.post(path, content=json.dumps(spec if path != "/workflows/execute" else body),
                            headers={"content-type": "application/json"})
            assert r.status_code < 500, (path, depth, r.status_code, r.text[:300])


def test_body_limit_by_content_length(make_client):
    client = make_client(AGENTFLOW_MAX_BODY_BYTES="20000")
    big = {"id": "x", "name": "y" * 30_000}
    body = assert_error_shape(client.post("/workflows/validate", json=big), 413)
    assert "20000" in body["detail"]
    # under the limit: fine
    assert client.post("/workflows/validate", json=triage()).status_code == 200


def test_body_limit_counts_streamed_bytes(make_client):
    client = make_client(AGENTFLOW_MAX_BODY_BYTES="20000")

    def chunks():
        yield b'{"id": "x", "name": "'
        for _ in range(50):
            yield b"y" * 1000
        yield b'"}'

    r = client.post("/workflows/validate", content=chunks(), headers={"content-type": "application/json"})
    assert "content-length" not in {k.lower() for k in r.request.headers}
    assert_error_shape(r, 413)


def test_default_body_limit_allows_normal_specs(client):
    spec = triage()
    spec["description"] = "x" * 100_000
    assert client.post("/workflows/validate", json=spec).status_code == 200


def test_request_validation_errors_have_paths(client):
    body = assert_error_shape(client.get("/workflows?limit=0"), 422)
    assert body["errors"][0]["path"] == "query.limit"
    body = assert_error_shape(client.post("/workflows/execute", json={"spec": rules_spec(), "initial_sate": {}}), 422)
    assert body["errors"] == [{"path": "initial_sate", "message": "unknown field"}]
    body = assert_error_shape(client.post("/workflows/execute", json={"initial_state": {"metadata": []}}), 422)
    assert {e["path"] for e in body["errors"]} == {"spec", "initial_state.metadata"}


def test_404_and_405_shapes(client):
    body = assert_error_shape(client.get("/workflows/nope"), 404)
    assert body == {"detail": "workflow 'nope' not found", "errors": []}
    assert_error_shape(client.get("/runs/nope"), 404)
    assert_error_shape(client.get("/sources/nope"), 404)
    assert_error_shape(client.get("/schedules/nope"), 404)
    assert_error_shape(client.get("/no/such/api/path"), 404)
    assert_error_shape(client.patch("/workflows"), 405)


def test_unexpected_exception_is_500_internal_error(make_client):
    client = make_client(raise_server_exceptions=False)
    services = client.app.state.services

    def boom(*a, **k):
        raise RuntimeError("secret internals")

    services.workflows.list = boom
    r = client.get("/workflows")
    assert r.status_code == 500
    assert r.json() == {"detail": "internal error", "errors": []}


def test_openapi_document(client):
    doc = client.get("/openapi.json").json()
    schemas = doc["components"]["schemas"]
    for name in ("WorkflowSpec", "Source", "WorkflowRecord", "RunRecord", "ErrorResponse", "LLMNode"):
        assert name in schemas, name
    assert "HTTPValidationError" not in json.dumps(doc)
    post = doc["paths"]["/workflows"]["post"]
    assert post["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/WorkflowSpec")
    assert "/runs/{run_id}/events" in doc["paths"]
    assert client.get("/docs").status_code == 200


def test_curl_form_content_type_is_read_as_json(client):
    for ctype in ("application/x-www-form-urlencoded", "text/plain"):
        r = client.post("/workflows/execute", content=json.dumps({"spec": rules_spec()}), headers={"content-type": ctype})
        assert r.status_code == 200, r.text
        r = client.post("/sources", content=json.dumps({"id": f"s{len(ctype)}", "kind": "db", "driver": "sqlite",
                                                         "dsn_env": "X"}), headers={"content-type": ctype})
        assert r.status_code == 201, r.text


def test_405_lists_every_method_of_the_path(client):
    for method, path, methods in (("OPTIONS", "/workflows", {"GET", "POST"}),
                                  ("OPTIONS", "/workflows/x", {"GET", "PUT", "DELETE"}),
                                  ("OPTIONS", "/workflows/execute", {"POST"}),
                                  ("HEAD", "/health", {"GET"}),
                                  ("GET", "/runs/x/cancel", {"POST"})):
        r = client.request(method, path)
        if method == "HEAD":
            assert r.status_code == 405 and r.headers["allow"] == "GET"
            continue
        assert_error_shape(r, 405)
        assert set(r.headers["allow"].split(", ")) == methods, (path, r.headers["allow"])


def test_validate_422_always_says_valid_false(client):
    for content in (b"", b"{oops"):
        body = assert_error_shape(client.post("/workflows/validate", content=content), 422)
        assert body["valid"] is False
