"""The audit log: one row for every successful write and run start/cancel (tenant,
subject, role, action, target, time), none for reads or refused calls; GET /audit for
admins of the tenant, newest first, paginated."""

from __future__ import annotations

import hashlib
import hmac
import time
from datetime import datetime, timedelta, timezone

import pytest

from agentflow.api.roles import PERMISSIONS, ROLES, role_allows
from tests.security.test_auth_matrix import known_request


def audit(api, tenant: str = "acme", **query) -> list[dict]:
    params = "&".join(f"{k}={v}" for k, v in {"limit": 200, **query}.items())
    response = api.call("GET", f"/audit?{params}", tenant, "admin")
    assert response.status_code == 200, response.text
    return response.json()["items"]


@pytest.fixture
def world(make_api):
    from tests.security.conftest import seed_tenant

    api = make_api(AGENTFLOW_RATE_TENANT_PER_MINUTE="0", AGENTFLOW_RATE_IP_PER_MINUTE="0")
    return api, seed_tenant(api, "acme", "ACME")


WRITES = sorted(key for key, rule in PERMISSIONS.items() if rule.action and rule.role in ROLES)


@pytest.mark.parametrize("method,path", WRITES, ids=[f"{m} {p}" for m, p in WRITES])
def test_each_write_leaves_one_audit_row(world, method, path):
    api, ids = world
    rule = PERMISSIONS[(method, path)]
    request = known_request(api, ids, method, path)
    if request is None:
        pytest.fail(f"no known request for {method} {path}: add one to test_auth_matrix.known_request")
    url, kwargs = request
    role = rule.role  # the lowest role allowed
    before = audit(api)
    response = api.call(method, url, "acme", role, **kwargs)
    assert 200 <= response.status_code < 300, response.text
    after = audit(api)
    new = [e for e in after if e["id"] not in {b["id"] for b in before}]
    assert len(new) == 1, new
    entry = new[0]
    assert entry["action"] == rule.action
    assert entry["target_type"] == rule.target_type
    assert entry["subject"] == f"{role}@acme" and entry["role"] == role
    assert entry["ip"] == "testclient"
    assert entry["detail"]["method"] == method and entry["detail"]["status"] == response.status_code
    at = datetime.fromisoformat(entry["at"].replace("Z", "+00:00"))
    assert abs(datetime.now(timezone.utc) - at) < timedelta(minutes=1)
    if rule.target_id is None:  # a request about no one object (POST /mcp)
        assert entry["target_id"] is None
        return
    kind, _, name = rule.target_id.partition(":")
    if kind == "body":
        assert entry["target_id"] == str(response.json()[name])
    else:
        assert entry["target_id"] == url.split("/")[path.split("/").index("{" + name + "}")]


def test_reads_and_refused_writes_leave_no_row(world):
    api, ids = world
    before = audit(api)
    for url in ("/workflows", "/workflows/wf", f"/runs/{ids['run_id']}", "/sources", "/schedules", "/audit"):
        assert api.call("GET", url, "acme", "admin").status_code == 200
    assert api.call("POST", "/workflows/validate", "acme", "viewer", json={"id": "x"}).status_code == 422
    assert api.call("POST", "/workflows", "acme", "viewer", json={"id": "x"}).status_code == 403       # role
    assert api.call("POST", "/workflows", "acme", "editor", json={"id": "x"}).status_code == 422       # invalid
    assert api.call("DELETE", "/workflows/nope", "acme", "editor").status_code == 404                 # missing
    assert api.call("POST", "/runs/nope/cancel", "acme", "operator").status_code == 404
    assert api.client.post("/workflows", json={"id": "x"}).status_code == 401                         # no token
    assert [e["id"] for e in audit(api)] == [e["id"] for e in before]


def test_run_start_and_cancel_are_recorded(world):
    api, _ = world
    started = api.call("POST", "/workflows/wf/runs", "acme", "editor", json={"input": {"user_input": "x"}})
    run_id = started.json()["run_id"]
    api.call("POST", f"/runs/{run_id}/cancel", "acme", "operator")
    entries = audit(api, target_id=run_id)
    assert [(e["action"], e["subject"]) for e in entries] == [("run.cancel", "operator@acme"),
                                                              ("run.start", "editor@acme")]
    assert entries[1]["detail"]["params"] == {"workflow_id": "wf"}


def test_signed_hook_trigger_is_recorded_as_the_hook(world, monkeypatch):
    from agentflow.runs.webhooks import SIGNATURE_HEADER, TIMESTAMP_HEADER

    api, _ = world
    monkeypatch.setenv("AUDIT_HOOK_KEY", "audit-hook-key-0123456789")
    hook = api.call("POST", "/hooks", "acme", "operator", json={"workflow_id": "wf", "secret_env": "AUDIT_HOOK_KEY"})
    assert hook.status_code == 201, hook.text
    hook_id = hook.json()["id"]
    body = b'{"user_input": "from a hook"}'
    stamp = str(int(time.time()))
    digest = hmac.new(b"audit-hook-key-0123456789", stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    response = api.client.post(f"/hooks/{hook_id}", content=body, headers={
        TIMESTAMP_HEADER: stamp, SIGNATURE_HEADER: f"sha256={digest}", "Content-Type": "application/json"})
    assert response.status_code == 202, response.text
    run_id = response.json()["run_id"]
    (entry,) = audit(api, action="run.start_hook")
    assert entry["target_id"] == run_id and entry["subject"] == f"hook:{hook_id}" and entry["role"] == "trigger"
    # a replay starts nothing and records nothing
    again = api.client.post(f"/hooks/{hook_id}", content=body, headers={
        TIMESTAMP_HEADER: stamp, SIGNATURE_HEADER: f"sha256={digest}", "Content-Type": "application/json"})
    assert again.status_code == 409 and again.json()["run_id"] == run_id, again.text
    assert len(audit(api, action="run.start_hook")) == 1
    # a bad signature records nothing either
    bad = api.client.post(f"/hooks/{hook_id}", content=body, headers={
        TIMESTAMP_HEADER: stamp, SIGNATURE_HEADER: "sha256=" + "0" * 64})
    assert bad.status_code == 401
    assert len(audit(api, action="run.start_hook")) == 1


def test_audit_is_for_admins_of_the_tenant_only(world):
    api, _ = world
    for role in ROLES:
        status = api.call("GET", "/audit", "acme", role).status_code
        assert status == (200 if role_allows(role, "admin") else 403), role
    assert api.client.get("/audit").status_code == 401
    assert audit(api, "globex") == []  # another tenant's admin sees none of acme's entries
    assert audit(api, "acme")


def test_audit_pages_newest_first(world):
    api, _ = world
    for i in range(7):
        assert api.call("PUT", f"/sources/page-{i}", "acme", "editor",
                        json={"id": f"page-{i}", "kind": "api", "base_url": "https://api.example.com"}).status_code == 201
    seen, cursor = [], None
    while True:
        url = "/audit?limit=3&action=source.put" + (f"&cursor={cursor}" if cursor else "")
        page = api.call("GET", url, "acme", "admin").json()
        assert len(page["items"]) <= 3
        seen += page["items"]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert [e["target_id"] for e in seen] == [f"page-{i}" for i in reversed(range(7))]
    assert [e["id"] for e in seen] == sorted((e["id"] for e in seen), reverse=True)
    assert api.call("GET", "/audit?cursor=bm9wZQ", "acme", "admin").status_code == 422
    assert api.call("GET", "/audit?limit=0", "acme", "admin").status_code == 422
    one = audit(api, target_id="page-3")
    assert [e["action"] for e in one] == ["source.put"]


def test_audit_rows_hold_no_secret_values(world, monkeypatch):
    from agentflow.graph.secrets import remember

    api, _ = world
    canary = "sk-audit-canary-5b0c7a"
    remember(canary)
    api.call("PUT", f"/sources/{canary}", "acme", "editor",
             json={"id": canary, "kind": "api", "base_url": "https://api.example.com"})
    assert canary not in api.call("GET", "/audit", "acme", "admin").text
