"""Every API route: listed in the permission table, closed without a valid token, and
open to exactly the roles the table names (auth `required`, HS256).

The routes are read from the app itself, so a route added later without a line in
api/roles.py PERMISSIONS fails `test_every_route_is_in_the_permission_table`.
Routes with a known request below must answer 2xx to an allowed role; any other route
must not answer 401/403/5xx to an allowed role.
"""

from __future__ import annotations

import itertools
import time
from typing import Any, Callable

import jwt
import pytest
from fastapi.routing import APIRoute

from agentflow.api.errors import _leaf_routes
from agentflow.api.roles import PERMISSIONS, PUBLIC, ROLES, role_allows
from tests.helpers import rules_spec
from tests.security.conftest import SECRET, Api, secure_api, seed_tenant

FASTAPI_DOCS = {"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}
TABLE = sorted(PERMISSIONS)
PROTECTED = [key for key in TABLE if PERMISSIONS[key].role != PUBLIC]
_n = itertools.count(1)


def app_routes(app) -> set[tuple[str, str]]:
    out = set()
    for prefix, route in _leaf_routes(app.routes):
        path = prefix + route.path
        if path in FASTAPI_DOCS:
            continue
        assert isinstance(route, APIRoute), f"{path} is not a FastAPI route: the auth dependency would not run"
        out.update((method, path) for method in route.methods)
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    with secure_api(tmp_path_factory.mktemp("matrix"), AGENTFLOW_RATE_TENANT_PER_MINUTE="0",
                    AGENTFLOW_RATE_IP_PER_MINUTE="0") as api:
        yield api, seed_tenant(api, "acme", "ACME")


# ---------------------------------------------------------------- requests per route


def _fresh(api: Api, kind: str) -> str:
    """A new object of `kind` (made by the admin) for a route that deletes one."""
    n = next(_n)
    if kind == "workflow":
        wid = f"del-{n}"
        assert api.call("POST", "/workflows", json=rules_spec(id=wid)).status_code == 201
        return wid
    if kind == "source":
        sid = f"del-{n}"
        assert api.call("POST", "/sources", json={"id": sid, "kind": "api",
                                                  "base_url": "https://api.example.com"}).status_code == 201
        return sid
    if kind == "schedule":
        r = api.call("POST", "/schedules", json={"workflow_id": "wf", "interval_seconds": 60, "enabled": False})
        assert r.status_code == 201, r.text
        return r.json()["id"]
    if kind == "hook":
        r = api.call("POST", "/hooks", json={"workflow_id": "wf", "secret_env": "DEL_HOOK_KEY"})
        assert r.status_code == 201, r.text
        return r.json()["id"]
    if kind == "waiting-run":  # a run paused on a human node
        wid = f"ask-{n}"
        spec = {"id": wid, "name": "ask", "start_node": "ask", "nodes": [
            {"id": "ask", "type": "human", "config": {"prompt": "ok?"}}], "edges": []}
        assert api.call("POST", "/workflows", json=spec).status_code == 201
        r = api.call("POST", f"/workflows/{wid}/runs", json={"input": {"user_input": "x"}})
        assert r.status_code == 202, r.text
        run_id = r.json()["run_id"]
        for _ in range(200):
            if api.call("GET", f"/runs/{run_id}").json()["status"] == "waiting":
                return run_id
            time.sleep(0.02)
        raise AssertionError(f"run {run_id} never waited")
    if kind == "webhook":
        r = api.call("POST", "/webhooks", json={"url": "https://93.184.216.34/del", "workflow_id": "never-runs"})
        assert r.status_code == 201, r.text
        return r.json()["id"]
    raise AssertionError(kind)


Request = tuple[str, dict[str, Any]]  # (url, keyword arguments of client.request)


def known_request(api: Api, ids: dict[str, str], method: str, path: str) -> Request | None:
    """A request that must succeed for an allowed role, or None for a route not known here."""
    n = next(_n)
    run, sched = ids["run_id"], ids["schedule_id"]
    schedule_body = {"workflow_id": "wf", "interval_seconds": 120, "enabled": False}
    table: dict[tuple[str, str], Callable[[], Request]] = {
        ("GET", "/auth/me"): lambda: ("/auth/me", {}),
        ("GET", "/audit"): lambda: ("/audit?limit=5", {}),
        ("GET", "/metrics"): lambda: ("/metrics", {}),
        ("GET", "/metrics/summary"): lambda: ("/metrics/summary", {}),
        ("POST", "/workflows/validate"): lambda: ("/workflows/validate", {"json": rules_spec()}),
        ("POST", "/workflows/execute"): lambda: ("/workflows/execute", {
            "json": {"spec": rules_spec(id=f"ex-{n}"), "initial_state": {"user_input": "hi"}}}),
        ("GET", "/workflows"): lambda: ("/workflows", {}),
        ("POST", "/workflows"): lambda: ("/workflows", {"json": rules_spec(id=f"new-{n}")}),
        ("GET", "/workflows/{workflow_id}"): lambda: ("/workflows/wf", {}),
        ("PUT", "/workflows/{workflow_id}"): lambda: ("/workflows/wf", {
            "json": rules_spec(id="wf", name="Replaced workflow")}),
        ("DELETE", "/workflows/{workflow_id}"): lambda: (f"/workflows/{_fresh(api, 'workflow')}", {}),
        ("GET", "/workflows/{workflow_id}/versions"): lambda: ("/workflows/wf/versions", {}),
        ("GET", "/workflows/{workflow_id}/versions/{version}"): lambda: ("/workflows/wf/versions/1", {}),
        ("GET", "/workflows/{workflow_id}/versions/{a}/diff/{b}"): lambda: ("/workflows/wf/versions/1/diff/1", {}),
        ("POST", "/workflows/{workflow_id}/rollback"): lambda: ("/workflows/wf/rollback", {"json": {"version": 1}}),
        ("POST", "/workflows/{workflow_id}/runs"): lambda: ("/workflows/wf/runs", {"json": {"input": {"user_input": "x"}}}),
        ("GET", "/workflows/{workflow_id}/runs"): lambda: ("/workflows/wf/runs", {}),
        ("GET", "/runs"): lambda: ("/runs", {}),
        ("GET", "/runs/{run_id}"): lambda: (f"/runs/{run}", {}),
        ("GET", "/runs/{run_id}/events"): lambda: (f"/runs/{run}/events", {}),
        ("GET", "/runs/{run_id}/trace"): lambda: (f"/runs/{run}/trace", {}),
        ("POST", "/runs/{run_id}/cancel"): lambda: (f"/runs/{run}/cancel", {}),
        ("DELETE", "/mcp"): lambda: ("/mcp", {}),
        ("POST", "/mcp"): lambda: ("/mcp", {"json": {"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                                            "headers": {"Accept": "application/json, text/event-stream"}}),
        ("POST", "/runs/{run_id}/resume"): lambda: (f"/runs/{_fresh(api, 'waiting-run')}/resume",
                                                   {"json": {"node": "ask", "choice": "approve"}}),
        ("POST", "/runs/{run_id}/rerun"): lambda: (f"/runs/{run}/rerun", {"json": {"from_node": "route"}}),
        ("GET", "/sources"): lambda: ("/sources", {}),
        ("POST", "/sources"): lambda: ("/sources", {"json": {"id": f"src-{n}", "kind": "api",
                                                             "base_url": "https://api.example.com"}}),
        ("GET", "/sources/{source_id}"): lambda: ("/sources/src", {}),
        ("PUT", "/sources/{source_id}"): lambda: ("/sources/src", {"json": {"id": "src", "kind": "api",
                                                                            "base_url": "https://api.example.com/v2"}}),
        ("DELETE", "/sources/{source_id}"): lambda: (f"/sources/{_fresh(api, 'source')}", {}),
        ("GET", "/schedules"): lambda: ("/schedules", {}),
        ("POST", "/schedules"): lambda: ("/schedules", {"json": schedule_body}),
        ("GET", "/schedules/{schedule_id}"): lambda: (f"/schedules/{sched}", {}),
        ("PUT", "/schedules/{schedule_id}"): lambda: (f"/schedules/{sched}", {"json": schedule_body}),
        ("DELETE", "/schedules/{schedule_id}"): lambda: (f"/schedules/{_fresh(api, 'schedule')}", {}),
        ("GET", "/hooks"): lambda: ("/hooks", {}),
        ("POST", "/hooks"): lambda: ("/hooks", {"json": {"workflow_id": "wf", "secret_env": "NEW_HOOK_KEY"}}),
        ("GET", "/hooks/{hook_id}"): lambda: (f"/hooks/{ids['hook_id']}", {}),
        ("DELETE", "/hooks/{hook_id}"): lambda: (f"/hooks/{_fresh(api, 'hook')}", {}),
        ("GET", "/webhooks"): lambda: ("/webhooks", {}),
        ("POST", "/webhooks"): lambda: ("/webhooks", {
            "json": {"url": f"https://93.184.216.34/new-{n}", "workflow_id": "never-runs"}}),
        ("GET", "/webhooks/{webhook_id}"): lambda: (f"/webhooks/{ids['webhook_id']}", {}),
        ("DELETE", "/webhooks/{webhook_id}"): lambda: (f"/webhooks/{_fresh(api, 'webhook')}", {}),
        ("GET", "/webhooks/{webhook_id}/deliveries"): lambda: (f"/webhooks/{ids['webhook_id']}/deliveries", {}),
    }
    make = table.get((method, path))
    return make() if make is not None else None


PARAMS = {"workflow_id": "wf", "version": "1", "a": "1", "b": "1"}


def generic_request(ids: dict[str, str], method: str, path: str) -> Request:
    """Any route: path parameters from the seeded ids, an empty JSON object as body."""
    values = {**PARAMS, **ids}
    url = path
    for name in [seg[1:-1] for seg in path.split("/") if seg.startswith("{")]:
        url = url.replace("{" + name + "}", values.get(name, "x"))
    return url, ({} if method in ("GET", "DELETE") else {"json": {}})


# ---------------------------------------------------------------- the table covers the app


def test_every_route_is_in_the_permission_table(world):
    api, _ = world
    routes = app_routes(api.app)
    missing = sorted(routes - set(PERMISSIONS))
    assert not missing, ("routes without a line in api/roles.py PERMISSIONS (they are admin-only "
                         f"until listed): {missing}")
    stale = sorted(set(PERMISSIONS) - routes)
    assert not stale, f"PERMISSIONS lists routes the app does not have: {stale}"


def test_every_write_is_audited_by_its_rule():
    for (method, path), rule in PERMISSIONS.items():
        if method not in ("GET", "HEAD") and path not in ("/workflows/validate",):
            assert rule.action, f"{method} {path} writes but its rule names no audit action"
        if method == "GET":
            assert rule.action is None, f"{method} {path} reads but would be audited"


# ---------------------------------------------------------------- without a valid token


def _bad_tokens() -> dict[str, dict[str, str]]:
    now = int(time.time())
    claims = {"sub": "mallory", "tenant": "acme", "role": "admin", "iat": now, "exp": now + 600}
    return {
        "no token": {},
        "expired": {"Authorization": "Bearer " + jwt.encode({**claims, "iat": now - 7200, "exp": now - 3600},
                                                            SECRET, algorithm="HS256")},
        "wrong signature": {"Authorization": "Bearer " + jwt.encode(claims, "another-secret-" + "y" * 32,
                                                                    algorithm="HS256")},
        "alg none": {"Authorization": "Bearer " + jwt.encode(claims, None, algorithm="none")},
        "tampered": {"Authorization": "Bearer " + _tamper(jwt.encode({**claims, "role": "viewer"}, SECRET,
                                                                     algorithm="HS256"))},
        "no exp": {"Authorization": "Bearer " + jwt.encode({k: v for k, v in claims.items() if k != "exp"},
                                                           SECRET, algorithm="HS256")},
        "no tenant": {"Authorization": "Bearer " + jwt.encode({k: v for k, v in claims.items() if k != "tenant"},
                                                              SECRET, algorithm="HS256")},
        "unknown role": {"Authorization": "Bearer " + jwt.encode({**claims, "role": "root"}, SECRET,
                                                                 algorithm="HS256")},
        "garbage": {"Authorization": "Bearer not-a-jwt"},
        "basic auth": {"Authorization": "Basic YWRtaW46YWRtaW4="},
        "empty bearer": {"Authorization": "Bearer "},
    }


def _tamper(token: str) -> str:
    """Swap the payload for one claiming admin, keeping the viewer token's signature."""
    import base64
    import json

    head, payload, sig = token.split(".")
    data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    data["role"] = "admin"
    forged = base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")
    return f"{head}.{forged}.{sig}"


@pytest.mark.parametrize("method,path", PROTECTED, ids=[f"{m} {p}" for m, p in PROTECTED])
def test_protected_route_refuses_missing_and_bad_tokens(world, method, path):
    api, ids = world
    url, kwargs = generic_request(ids, method, path)
    for name, headers in _bad_tokens().items():
        response = api.client.request(method, url, headers=headers, **kwargs)
        assert response.status_code == 401, f"{name}: {method} {url} -> {response.status_code} {response.text}"
        body = response.json()
        assert body["detail"] and body["errors"] == [], body
        assert response.headers["www-authenticate"].startswith("Bearer"), name
        assert "mallory" not in response.text


@pytest.mark.parametrize("method,path", [k for k in TABLE if PERMISSIONS[k].role == PUBLIC],
                         ids=[f"{m} {p}" for m, p in TABLE if PERMISSIONS[(m, p)].role == PUBLIC])
def test_public_route_needs_no_token(world, method, path):
    api, ids = world
    url, kwargs = generic_request(ids, method, path)
    without = api.client.request(method, url, **kwargs)
    assert without.status_code < 500 and without.status_code != 403, without.text
    with_bad = api.client.request(method, url, headers=_bad_tokens()["wrong signature"], **kwargs)
    assert with_bad.status_code == without.status_code, "a public route must not care about the token"
    if without.status_code == 401:  # only an HMAC-signed hook trigger may refuse: its own 401
        assert path == "/hooks/{hook_id}" and "signature" in without.json()["detail"], without.text


# ---------------------------------------------------------------- each role against each route


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("method,path", PROTECTED, ids=[f"{m} {p}" for m, p in PROTECTED])
def test_role_against_route(world, method, path, role):
    api, ids = world
    rule = PERMISSIONS[(method, path)]
    known = known_request(api, ids, method, path)
    url, kwargs = known or generic_request(ids, method, path)
    response = api.call(method, url, "acme", role, **kwargs)
    if not role_allows(role, rule.role):
        assert response.status_code == 403, f"{role} {method} {url}: {response.status_code} {response.text}"
        assert f"needs {rule.role}" in response.json()["detail"]
        return
    if known is not None:
        assert 200 <= response.status_code < 300, f"{role} {method} {url}: {response.status_code} {response.text}"
    else:
        assert response.status_code not in (401, 403) and response.status_code < 500, (
            f"{role} {method} {url}: {response.status_code} {response.text}")


def test_required_mode_gives_loopback_no_pass(world):
    """`required` means required: the test client (a loopback stand-in) has no exemption."""
    api, _ = world
    assert api.client.get("/workflows").status_code == 401
    assert api.client.get("/auth/local-token").status_code == 404
    for path in ("/health", "/health/ready", "/schema", "/openapi.json", "/docs"):
        assert api.client.get(path).status_code == 200, path


def test_openapi_documents_bearer_auth(world):
    api, _ = world
    doc = api.client.get("/openapi.json").json()
    assert doc["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    for (method, path), rule in PERMISSIONS.items():
        operation = doc["paths"].get(path, {}).get(method.lower())
        if operation is None:
            continue
        if rule.role == PUBLIC:
            assert operation.get("security") == [], f"{method} {path}"
        else:
            assert operation["security"] == [{"bearerAuth": []}], f"{method} {path}"
            assert "401" in operation["responses"], f"{method} {path}"
