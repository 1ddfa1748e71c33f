"""Abuse limits: requests a minute per client IP and per tenant (429 + Retry-After),
the request body size limit, and CORS restricted to the configured Studio origins."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.helpers import run_coroutine
from tests.security.conftest import secure_api

REMOTE = ("203.0.113.9", 40000)


def test_defaults_are_generous(monkeypatch):
    from agentflow.settings import Settings

    for name in ("AGENTFLOW_RATE_TENANT_PER_MINUTE", "AGENTFLOW_RATE_IP_PER_MINUTE",
                 "AGENTFLOW_RATE_TENANT_BURST", "AGENTFLOW_RATE_IP_BURST"):
        monkeypatch.delenv(name, raising=False)
    s = Settings()
    assert s.rate_tenant_per_minute >= 1200 and s.rate_ip_per_minute >= 600
    assert s.rate_tenant_burst >= 100 and s.rate_ip_burst >= 100


def test_per_ip_limit(make_api):
    api = make_api(REMOTE, AGENTFLOW_RATE_IP_PER_MINUTE="6", AGENTFLOW_RATE_IP_BURST="3",
                   AGENTFLOW_RATE_TENANT_PER_MINUTE="0")
    statuses = [api.call("GET", "/workflows").status_code for _ in range(3)]
    assert statuses == [200, 200, 200]
    limited = api.call("GET", "/workflows")
    assert limited.status_code == 429
    assert 1 <= int(limited.headers["retry-after"]) <= 10
    body = limited.json()
    assert "address" in body["detail"] and body["errors"] == []
    # unauthenticated floods are limited too (the limit runs before the token is read)
    assert api.client.get("/workflows").status_code == 429
    # liveness and readiness are never limited
    assert all(api.client.get(p).status_code == 200 for p in ("/health", "/health/ready") for _ in range(5))
    # requests that never reach a route's authorization are limited before they are answered
    assert api.client.get("/no-such-route").status_code == 429


def test_requests_outside_the_api_count_against_the_address(make_api):
    api = make_api(REMOTE, AGENTFLOW_RATE_IP_PER_MINUTE="6", AGENTFLOW_RATE_IP_BURST="3",
                   AGENTFLOW_RATE_TENANT_PER_MINUTE="0")
    assert api.client.get("/no-such-route").status_code == 404  # counted by the middleware
    assert api.client.get("/runs", headers={"Authorization": "Bearer x.y.z"}).status_code == 401  # by authorize
    assert api.call("GET", "/workflows").status_code == 200
    assert api.call("GET", "/workflows").status_code == 429  # each request counted once: 3 = the burst


def test_per_ip_limit_counts_each_address(tmp_path):
    env = dict(AGENTFLOW_RATE_IP_PER_MINUTE="6", AGENTFLOW_RATE_IP_BURST="2", AGENTFLOW_RATE_TENANT_PER_MINUTE="0")
    with secure_api(tmp_path / "h", REMOTE, **env) as api:
        for _ in range(2):
            assert api.call("GET", "/workflows").status_code == 200
        assert api.call("GET", "/workflows").status_code == 429
        other = TestClient(api.app, client=("203.0.113.10", 1))
        assert other.get("/workflows", headers=api.headers()).status_code == 200


def test_per_tenant_limit(make_api):
    api = make_api(REMOTE, AGENTFLOW_RATE_TENANT_PER_MINUTE="6", AGENTFLOW_RATE_TENANT_BURST="2",
                   AGENTFLOW_RATE_IP_PER_MINUTE="0")
    assert [api.call("GET", "/runs", "acme", "viewer").status_code for _ in range(2)] == [200, 200]
    limited = api.call("GET", "/runs", "acme", "admin")  # any role, any subject: the tenant's budget
    assert limited.status_code == 429 and "tenant" in limited.json()["detail"]
    assert int(limited.headers["retry-after"]) >= 1
    assert api.call("GET", "/runs", "globex", "viewer").status_code == 200  # another tenant has its own
    # a bad token is refused (401) without spending the tenant's budget
    assert api.client.get("/runs", headers={"Authorization": "Bearer x.y.z"}).status_code == 401


def test_local_mode_does_not_limit_this_machine(make_api):
    api = make_api(None, AGENTFLOW_AUTH="local", AGENTFLOW_JWT_SECRET=None, AGENTFLOW_RATE_IP_PER_MINUTE="6",
                   AGENTFLOW_RATE_IP_BURST="1", AGENTFLOW_RATE_TENANT_PER_MINUTE="6", AGENTFLOW_RATE_TENANT_BURST="1")
    assert all(api.client.get("/workflows").status_code == 200 for _ in range(10))
    remote = TestClient(api.app, client=REMOTE)
    headers = api.headers("default", "viewer")
    assert [remote.get("/workflows", headers=headers).status_code for _ in range(2)] == [200, 429]


def test_memory_entries_of_idle_addresses_are_forgotten(tmp_path):
    from agentflow.api import abuse

    with secure_api(tmp_path / "h", REMOTE, AGENTFLOW_RATE_IP_PER_MINUTE="60000",
                    AGENTFLOW_RATE_IP_BURST="5", AGENTFLOW_RATE_TENANT_PER_MINUTE="0") as api:
        limits = api.app.state.api_limits
        async def flood():
            for i in range(abuse.PRUNE_EVERY + 5):
                await limits.check_async((f"10.9.{i // 250}.{i % 250}",), None)

        run_coroutine(flood)
        assert len(limits.limiter._queues) < abuse.PRUNE_EVERY


# ---------------------------------------------------------------- body size, CORS


def test_body_size_limit(make_api):
    api = make_api(AGENTFLOW_MAX_BODY_BYTES="2000")
    big = {"id": "x", "name": "y" * 5000}
    r = api.call("POST", "/workflows", json=big)
    assert r.status_code == 413 and "larger than 2000 bytes" in r.json()["detail"]
    # also when the client streams it without a Content-Length
    r = api.call("POST", "/workflows", content=iter([b'{"id": "', b"y" * 3000, b'"}']),
                 headers={"Content-Type": "application/json"})
    assert r.status_code == 413


@pytest.mark.parametrize("origin,allowed", [
    ("https://studio.example.com", True), ("https://evil.example", False), ("http://localhost:3000", False)])
def test_cors_only_for_configured_studio_origins(make_api, origin, allowed):
    api = make_api(AGENTFLOW_CORS_ORIGINS="https://studio.example.com, https://ops.example.com/")
    preflight = api.client.options("/workflows", headers={
        "Origin": origin, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type"})
    simple = api.call("GET", "/workflows", headers={"Origin": origin})
    if allowed:
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == origin
        assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
        assert simple.headers["access-control-allow-origin"] == origin
    else:
        assert "access-control-allow-origin" not in preflight.headers
        assert "access-control-allow-origin" not in simple.headers


def test_no_cors_headers_without_configured_origins(make_api):
    api = make_api()
    r = api.call("GET", "/workflows", headers={"Origin": "https://studio.example.com"})
    assert "access-control-allow-origin" not in r.headers


@pytest.mark.redis
def test_limits_hold_across_api_replicas_through_redis(monkeypatch):
    """Distributed mode counts in Redis: two API processes share one budget."""
    import uuid

    from agentflow.api.abuse import ApiRateLimits, RateLimited
    from agentflow.settings import Settings

    url = "redis://127.0.0.1:6379/0"
    from tests.needs import need_redis

    need_redis(url)
    monkeypatch.setenv("REDIS_URL", url)
    monkeypatch.setenv("AGENTFLOW_RATE_IP_PER_MINUTE", "6")
    monkeypatch.setenv("AGENTFLOW_RATE_IP_BURST", "2")
    monkeypatch.setenv("AGENTFLOW_RATE_TENANT_PER_MINUTE", "6")
    monkeypatch.setenv("AGENTFLOW_RATE_TENANT_BURST", "2")
    first, second = ApiRateLimits(Settings()), ApiRateLimits(Settings())
    assert not first.in_memory
    ip, tenant = f"test-{uuid.uuid4().hex}", f"t-{uuid.uuid4().hex[:12]}"

    async def scenario():
        await first.check_async((ip,), None)
        await second.check_async((ip,), None)
        with pytest.raises(RateLimited) as info:
            await first.check_async((ip,), None)
        assert info.value.status_code == 429 and int(info.value.headers["Retry-After"]) >= 1
        assert "address" in str(info.value.detail)
        await first.check_async(None, tenant)
        await second.check_async(None, tenant)
        with pytest.raises(RateLimited) as info:
            await second.check_async(None, tenant)
        assert "tenant" in str(info.value.detail)
        # an address and a tenant checked together (one round trip): each has its own budget
        other_ip, other_tenant = f"{ip}-2", f"{tenant}-2"
        await first.check_async((other_ip,), other_tenant)
        await second.check_async((other_ip,), other_tenant)
        with pytest.raises(RateLimited) as info:
            await first.check_async((other_ip,), other_tenant)
        assert "address" in str(info.value.detail)  # the address is named first
        with pytest.raises(RateLimited) as info:
            await first.check_async(None, other_tenant)
        assert "tenant" in str(info.value.detail)
        # the script is loaded again after Redis forgot it (a restart, SCRIPT FLUSH)
        first.limiter.redis.script_flush()
        await first.check_async((f"{ip}-3",), None)

    run_coroutine(scenario)


def test_limits_let_requests_through_when_redis_is_down(monkeypatch, caplog):
    from agentflow.api.abuse import ApiRateLimits
    from agentflow.settings import Settings

    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")  # nothing listens there
    monkeypatch.setenv("AGENTFLOW_RATE_IP_PER_MINUTE", "6")
    monkeypatch.setenv("AGENTFLOW_RATE_IP_BURST", "1")
    limits = ApiRateLimits(Settings())

    async def flood():
        for _ in range(3):
            await limits.check_async(("203.0.113.1",), "acme")  # no exception: fail open

    run_coroutine(flood)
    assert "not enforced" in caplog.text
