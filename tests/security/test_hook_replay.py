"""The replay guard of inbound triggers is atomic: ten identical signed requests fired at
once start exactly one run, and the other nine get a clear 409.

Against real `agentflow serve` processes: embedded (SQLite, the guard is a unique row) and
distributed (Postgres + Redis, the guard is one SET NX), where the requests are spread over
two API processes sharing the guard. And the store guard alone, on SQLite and Postgres.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from agentflow.runs.webhooks import sign
from tests.helpers import rules_spec
from tests.servers.agentflow_serve import AgentflowServe, server_env

HOOK_KEY = "replay-hook-key-0123456789abcdef"
JWT_SECRET = "replay-jwt-secret-" + "x" * 24
AT_ONCE = 10


def _servers_env(home: Path) -> dict[str, str]:
    return server_env(home, AGENTFLOW_AUTH="required", AGENTFLOW_JWT_SECRET=JWT_SECRET, AF_REPLAY_HOOK_KEY=HOOK_KEY,
                      AGENTFLOW_RATE_IP_PER_MINUTE="0", AGENTFLOW_RATE_TENANT_PER_MINUTE="0")


def _admin_token(env: dict[str, str]) -> str:
    return subprocess.run([sys.executable, "-m", "agentflow.cli", "token", "create", "--tenant", "default",
                           "--role", "admin", "--ttl", "3600"], env=env, capture_output=True,
                          text=True, check=True).stdout.strip()


@pytest.fixture(params=["embedded", "distributed"])
def servers(request, tmp_path):
    """(base URLs, admin token, Redis URL or None): one embedded server, or two distributed API processes on a
    fresh Postgres database and a private redis-server (no other test's queues touched)."""
    env = _servers_env(tmp_path / "home")
    with contextlib.ExitStack() as stack:
        if request.param == "distributed":
            from tests.databases import fresh_database
            from tests.chaos.harness import PrivateRedis
            from tests.needs import need_redis_server

            need_redis_server()
            redis = PrivateRedis(tmp_path)
            redis.start()
            stack.callback(redis.stop)
            env.update(DATABASE_URL=stack.enter_context(fresh_database()), REDIS_URL=redis.url)
        # distributed: a second API process, and the guard must hold across processes
        count = 2 if request.param == "distributed" else 1
        urls = [stack.enter_context(AgentflowServe(env, tmp_path / f"serve-{i}.log", "--log-level", "warning")).url
                for i in range(count)]
        yield urls, _admin_token(env), env.get("REDIS_URL")


def _signed(body: bytes, at: int) -> dict[str, str]:
    ts = str(at)
    return {"X-AgentFlow-Timestamp": ts, "X-AgentFlow-Signature": sign(HOOK_KEY, ts, body),
            "Content-Type": "application/json"}


def test_identical_signed_requests_at_once_start_exactly_one_run(servers):
    urls, token, redis_url = servers
    admin = httpx.Client(base_url=urls[0], headers={"Authorization": f"Bearer {token}"}, timeout=30)
    spec = rules_spec()
    assert admin.post("/workflows", json=spec).status_code == 201
    hook = admin.post("/hooks", json={"workflow_id": spec["id"], "secret_env": "AF_REPLAY_HOOK_KEY"})
    assert hook.status_code == 201, hook.text
    path = f"/hooks/{hook.json()['id']}"

    body = json.dumps({"user_input": "once only " + uuid.uuid4().hex}).encode()
    headers = _signed(body, int(time.time()))
    barrier = threading.Barrier(AT_ONCE)
    clients = [httpx.Client(base_url=urls[i % len(urls)], timeout=30) for i in range(AT_ONCE)]

    def fire(i: int) -> httpx.Response:
        barrier.wait()
        return clients[i].post(path, content=body, headers=headers)

    with ThreadPoolExecutor(AT_ONCE) as pool:
        answers = list(pool.map(fire, range(AT_ONCE)))
    for c in clients:
        c.close()

    accepted = [r for r in answers if r.status_code == 202]
    refused = [r for r in answers if r.status_code == 409]
    assert len(accepted) == 1 and len(refused) == AT_ONCE - 1, [(r.status_code, r.text) for r in answers]
    run_id = accepted[0].json()["run_id"]
    for r in refused:
        problem = r.json()
        assert "signed request" in problem["detail"] and "new signature" in problem["detail"], problem
        assert problem["errors"][0]["path"] == "header.X-AgentFlow-Signature"
        assert problem["run_id"] in (run_id, None)   # None: the winner was still starting its run

    runs = admin.get("/runs", params={"workflow_id": spec["id"]}).json()["items"]
    assert [r["run_id"] for r in runs] == [run_id]

    # sent again later: the same 409, now naming the run it started
    again = httpx.post(urls[-1] + path, content=body, headers=headers, timeout=30)
    assert again.status_code == 409 and again.json()["run_id"] == run_id, again.text
    assert again.headers["Location"] == f"/runs/{run_id}"
    # a new signature (new body) is a new trigger
    other = json.dumps({"user_input": "another"}).encode()
    assert httpx.post(urls[0] + path, content=other, headers=_signed(other, int(time.time())),
                      timeout=30).status_code == 202
    assert len(admin.get("/runs", params={"workflow_id": spec["id"]}).json()["items"]) == 2
    if redis_url:   # distributed: the guard is the API processes' shared Redis (SET NX)
        import redis

        assert len(redis.Redis.from_url(redis_url).keys("af:hook-seen:*")) == 2
    admin.close()


@pytest.fixture(params=["sqlite", "postgres"])
def replays(request, tmp_path):
    from agentflow.store.db import get_engine, migrate, session_factory
    from agentflow.store.hooks import HookReplays

    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'hooks.db'}"
        migrate(url)
        yield HookReplays(session_factory(url), ttl=600)
        get_engine(url).dispose()
        return
    from tests.databases import fresh_database

    with fresh_database() as url:
        yield HookReplays(session_factory(url), ttl=600)
        get_engine(url).dispose()


def test_the_store_guard_lets_exactly_one_claim_through(replays):
    key = uuid.uuid4().hex
    barrier = threading.Barrier(AT_ONCE)

    def claim(_):
        barrier.wait()
        return replays.claim(key)

    with ThreadPoolExecutor(AT_ONCE) as pool:
        results = list(pool.map(claim, range(AT_ONCE)))
    assert results.count(None) == 1 and results.count("") == AT_ONCE - 1, results
    replays.settle(key, "r_winner")
    assert replays.claim(key) == "r_winner"
    replays.release(key)                      # a run that could not be started: may be retried
    assert replays.claim(key) is None


def test_an_expired_claim_is_forgotten(tmp_path):
    from agentflow.store.db import get_engine, migrate, session_factory
    from agentflow.store.hooks import HookReplays

    url = f"sqlite:///{tmp_path / 'hooks.db'}"
    migrate(url)
    short = HookReplays(session_factory(url), ttl=-1)   # expired as soon as written
    assert short.claim("k") is None and short.claim("k") is None
    get_engine(url).dispose()
