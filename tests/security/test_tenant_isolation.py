"""Tenant B walks every API route with tenant A's ids: it can list, read, run, cancel,
rerun, replace or delete nothing of A's. An object of another tenant is 404, never 403,
and A's data never shows in B's answers."""

from __future__ import annotations

import json

import pytest

from agentflow.api.pagination import encode
from agentflow.api.roles import PERMISSIONS, PUBLIC
from tests.helpers import rules_spec
from tests.security.conftest import seed_tenant
from tests.security.test_auth_matrix import app_routes, generic_request, known_request

UPSERTS = {("PUT", "/workflows/{workflow_id}"), ("PUT", "/sources/{source_id}")}  # B makes its own


def snapshot(api, tenant: str, ids: dict[str, str]) -> dict:
    get = lambda url: api.call("GET", url, tenant).json()  # noqa: E731
    snap = {
        "workflow": get("/workflows/wf"), "versions": get("/workflows/wf/versions"),
        "run": get(f"/runs/{ids['run_id']}"), "source": get("/sources/src"),
        "schedule": get(f"/schedules/{ids['schedule_id']}"),
        "runs": [r["run_id"] for r in get("/runs?limit=200")["items"]],
    }
    for kind in ("hook", "webhook"):
        if f"{kind}_id" in ids:
            snap[kind] = get(f"/{kind}s/{ids[kind + '_id']}")
    return snap


@pytest.fixture
def two_tenants(make_api):
    api = make_api(AGENTFLOW_RATE_TENANT_PER_MINUTE="0", AGENTFLOW_RATE_IP_PER_MINUTE="0")
    ids = seed_tenant(api, "acme", "ACME")
    return api, ids


def test_tenant_b_reaches_nothing_of_tenant_a(two_tenants):
    api, a_ids = two_tenants
    routes = sorted(r for r in app_routes(api.app) if PERMISSIONS.get(r) and PERMISSIONS[r].role != PUBLIC)
    # A's ids; objects a request needs (to delete, a run waiting for an answer) are made as A's
    # before the snapshot, so the snapshot sees only what B's requests could change
    requests = [(method, path, known_request(api, a_ids, method, path))
                for method, path in sorted(routes, key=lambda r: r in UPSERTS)]  # upserts last: they create B's "wf"
    before = snapshot(api, "acme", a_ids)
    a_only = ["ACME", "acme", a_ids["run_id"], a_ids["schedule_id"],
              *(a_ids.get(k, "ACME") for k in ("hook_id", "webhook_id"))]
    checked = []

    for method, path, known in requests:
        url, kwargs = known or generic_request(a_ids, method, path)
        response = api.call(method, url, "globex", "admin", **kwargs)
        text = response.text
        status = response.status_code
        where = f"{method} {url} as tenant B -> {status} {text[:300]}"
        assert status < 500 and status != 403, where
        for secret in ("ACME", "acme"):
            assert secret not in text, f"A's data leaked: {where}"
        if "{" in path and (method, path) not in UPSERTS:
            if status == 200 and method == "GET":  # a list filtered by an id of A's: empty
                assert not any(s in text for s in a_only), where
                body = response.json()
                assert not body.get("items"), where
            elif known is not None:
                assert status == 404, where
            else:
                assert status in (404, 422), where
        elif status == 200 and method == "GET":
            assert not any(s in text for s in a_only), where
        checked.append((method, path))

    assert len(checked) >= 30
    # A's objects are exactly as they were (B's PUTs made B's own "wf" and "src")
    assert snapshot(api, "acme", a_ids) == before
    assert api.call("GET", "/workflows/wf", "globex").json()["name"] != before["workflow"]["name"]
    # A's audit log holds nothing B did, and B's holds nothing of A's
    a_audit = api.call("GET", "/audit?limit=200", "acme").json()["items"]
    assert a_audit and all(e["subject"].endswith("@acme") for e in a_audit)
    b_audit = api.call("GET", "/audit?limit=200", "globex").json()["items"]
    assert b_audit and all(e["subject"].endswith("@globex") for e in b_audit)


def test_other_tenants_object_is_404_not_403(two_tenants):
    api, a_ids = two_tenants
    for url in ("/workflows/wf", f"/runs/{a_ids['run_id']}", "/sources/src", f"/schedules/{a_ids['schedule_id']}",
                f"/runs/{a_ids['run_id']}/events", "/workflows/wf/versions"):
        mine = api.call("GET", url, "acme", "viewer")
        theirs = api.call("GET", url, "globex", "viewer")
        assert mine.status_code == 200, url
        assert theirs.status_code == 404, url
        missing = api.call("GET", url.replace("wf", "nope").replace(a_ids["run_id"], "0" * 36)
                           .replace("src", "nope").replace(a_ids["schedule_id"], "0" * 36), "globex", "viewer")
        assert missing.status_code == 404
        # same answer as an id that exists nowhere: nothing tells B the object exists
        assert theirs.json()["detail"].split("'")[0] == missing.json()["detail"].split("'")[0]


def test_run_cancel_delete_and_start_are_refused_across_tenants(two_tenants):
    api, a_ids = two_tenants
    run = api.call("POST", "/workflows/wf/runs", "acme", json={"input": {"user_input": "slow"}}).json()["run_id"]
    assert api.call("POST", f"/runs/{run}/cancel", "globex").status_code == 404
    assert api.call("POST", "/workflows/wf/runs", "globex", json={"input": {}}).status_code == 404
    assert api.call("DELETE", "/workflows/wf", "globex").status_code == 404
    assert api.call("DELETE", "/sources/src", "globex").status_code == 404
    assert api.call("DELETE", f"/schedules/{a_ids['schedule_id']}", "globex").status_code == 404
    assert api.call("POST", "/schedules", "globex", json={"workflow_id": "wf", "interval_seconds": 60}).status_code == 422
    assert api.call("GET", "/workflows/wf", "acme").status_code == 200
    assert api.call("GET", "/sources/src", "acme").status_code == 200


def test_same_ids_in_two_tenants_stay_apart(two_tenants):
    api, _ = two_tenants
    spec = rules_spec(id="wf", name="GLOBEX workflow")
    assert api.call("POST", "/workflows", "globex", "editor", json=spec).status_code == 201
    assert api.call("GET", "/workflows/wf", "acme").json()["name"] == "ACME workflow"
    assert api.call("GET", "/workflows/wf", "globex").json()["name"] == "GLOBEX workflow"
    assert [w["id"] for w in api.call("GET", "/workflows", "globex").json()["items"]] == ["wf"]
    assert api.call("DELETE", "/workflows/wf", "globex", "editor").status_code == 204
    assert api.call("GET", "/workflows/wf", "acme").status_code == 200


def test_a_cursor_naming_another_tenants_run_reveals_nothing(two_tenants):
    api, a_ids = two_tenants
    for i in range(3):
        api.call("POST", "/workflows/execute", "globex",
                 json={"spec": rules_spec(id=f"b{i}"), "initial_state": {"user_input": str(i)}})
    plain = api.call("GET", "/runs", "globex").json()["items"]
    with_cursor = api.call("GET", f"/runs?cursor={encode(a_ids['run_id'])}", "globex").json()["items"]
    assert with_cursor == plain and len(plain) == 3


def test_the_tenant_comes_from_the_token_only(two_tenants):
    """Nothing in the request but the signed token picks the tenant."""
    api, _ = two_tenants
    for headers in ({"X-Tenant": "acme"}, {"X-Tenant-Id": "acme"}):
        r = api.call("GET", "/workflows", "globex", headers=headers)
        assert r.json()["items"] == [], headers
    r = api.call("GET", "/workflows?tenant=acme&tenant_id=acme", "globex")
    assert r.json()["items"] == []
    body = json.dumps(rules_spec(id="x", name="x"))
    r = api.call("POST", "/workflows", "globex", content=body.replace('"id": "x"', '"id": "x", "tenant_id": "acme"'),
                 headers={"Content-Type": "application/json"})
    assert r.status_code == 422  # unknown field, not a way to write into tenant A
    assert api.call("GET", "/workflows/x", "acme").status_code == 404
