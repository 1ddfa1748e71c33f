"""Distributed-mode fixtures: a fresh Postgres database, a Redis db, real Celery workers.

Workers are real `agentflow worker` processes (prefork pools), one group per queue, as
`make up` starts them. Each test module gets its own database and Redis db number (`fresh_env` makes more).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time

import pytest

from agentflow.workers.launch import WorkerProcesses as Workers  # one launcher for tests and benches
from tests.databases import fresh_database
from tests.needs import need_postgres, need_redis

REDIS_HOST = "127.0.0.1"


CLAIM = "agentflow:test:redis-db:{}"   # in db 0: which Redis db an environment of some test process uses
CLAIM_TTL = 3 * 3600  # a claim outlives any test run; one whose owner died is taken over sooner (take_claim)
HOST = socket.gethostname()
# the claim is set to ARGV[2] only if it still holds ARGV[1] (the dead owner's): of two
# claimers that found the same dead owner, one takes it
TAKE_OVER = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
  return 1
end
return 0
"""


def claim_owner() -> str:
    """What a claim holds: its owner's host and pid."""
    return f"{HOST}:{os.getpid()}"


def owner_dead(owner: bytes) -> bool:
    """True for the claim of a process of this host that no longer runs (a test run that
    was SIGKILLed never released its claims); another host's, or a value without a pid
    (older claims), is left to expire."""
    host, _, pid = owner.decode(errors="replace").rpartition(":")
    if host != HOST or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def take_claim(r0, key: str) -> bool:
    """Claim `key` for this process: when nobody holds it, or its owner is dead."""
    me = claim_owner()
    if r0.set(key, me, nx=True, ex=CLAIM_TTL):
        return True
    old = r0.get(key)
    if old is None:  # released (or expired) just now
        return bool(r0.set(key, me, nx=True, ex=CLAIM_TTL))
    return owner_dead(old) and bool(r0.eval(TAKE_OVER, 1, key, old, me, CLAIM_TTL))


def claim_redis_db() -> int:
    """A Redis db (1-14) no other environment uses, claimed in db 0 until `release_redis_db`:
    other test processes on this Redis (engineers sharing a machine) claim theirs the same
    way. An empty db is preferred: a process that does not claim leaves keys in the db it
    uses, and two fleets on one db take each other's messages."""
    import random

    import redis

    r0 = redis.Redis.from_url(f"redis://{REDIS_HOST}:6379/0")
    claimed = []
    try:
        for db in random.sample(range(1, 15), 14):
            if take_claim(r0, CLAIM.format(db)):
                if redis.Redis.from_url(f"redis://{REDIS_HOST}:6379/{db}").dbsize() == 0:
                    return db
                claimed.append(db)
        assert claimed, "every Redis db 1-14 is claimed by a live test environment"
        return claimed.pop(0)  # none empty: one a killed test run left keys in
    finally:
        for db in claimed:
            r0.delete(CLAIM.format(db))


def release_redis_db(db: int) -> None:
    import redis

    redis.Redis.from_url(f"redis://{REDIS_HOST}:6379/0").delete(CLAIM.format(db))


@contextlib.contextmanager
def fresh_env(home):
    """Environment for API and workers: a fresh database + a Redis db of its own
    (`claim_redis_db`), short visibility timeout; `home` is AGENTFLOW_HOME. Workers of two
    such environments share nothing: not a message, a lock or a run."""
    need_postgres("distributed tests need it")
    need_redis(f"redis://{REDIS_HOST}:6379/0")
    import redis

    redis_db = claim_redis_db()
    redis_url = f"redis://{REDIS_HOST}:6379/{redis_db}"
    try:
        with fresh_database("af_", "distributed tests need it") as db_url:
            redis.Redis.from_url(redis_url).flushdb()
            yield dict(os.environ, DATABASE_URL=db_url, REDIS_URL=redis_url, AGENTFLOW_HOME=str(home),
                       AGENTFLOW_VISIBILITY_TIMEOUT="8", AGENTFLOW_SCHEDULE_TICK="0.5", PYTHONUNBUFFERED="1")
    finally:
        redis.Redis.from_url(redis_url).flushdb()
        release_redis_db(redis_db)


@pytest.fixture(scope="module")
def dist_env(tmp_path_factory):
    """This module's environment (`fresh_env`)."""
    with fresh_env(tmp_path_factory.mktemp("afdist")) as env:
        yield env


@pytest.fixture(scope="module")
def workers(dist_env, tmp_path_factory):
    w = Workers(dist_env, tmp_path_factory.mktemp("workerlogs"))
    yield w
    w.stop_all()


def module_server(factory, **kwargs):
    """A module-scoped fixture yielding a running `factory(**kwargs)` stand-in server: the
    module's workers are started once with its URL in their environment."""

    @pytest.fixture(scope="module")
    def server():
        with factory(**kwargs) as srv:
            yield srv

    return server


def start_workers(dist_env: dict, workers: Workers, groups: dict[str, str | None], concurrency: int | None = 2,
                  pool: str | None = "prefork", env: dict[str, str] | None = None) -> Workers:
    """A module's cluster: `env` added to the API's environment and the workers', then one
    worker per group (name -> its queues, None for every queue), returned once all are ready."""
    dist_env.update(env or {})
    workers.env.update(env or {})
    for name, queues in groups.items():
        workers.start(name, queues, concurrency=concurrency, pool=pool)
    workers.wait_ready(list(groups))
    return workers


def start_default_workers(workers: Workers, *names: str) -> Workers:
    """`agentflow worker` with no queues, concurrency or pool, as a user starts it."""
    return start_workers(workers.env, workers, dict.fromkeys(names), concurrency=None, pool=None)


def store_for(env: dict):
    """The run store on the module's database, as the API and the workers see it."""
    from agentflow.store.db import session_factory
    from agentflow.store.runs import RunStore

    return RunStore(session_factory(env["DATABASE_URL"]))


def submit_run(env: dict, spec: dict, run_input: dict) -> str:
    """A run stored and sent to the `runs` queue as the API does, without an API."""
    from agentflow.workers.app import make_celery

    run_id = store_for(env).create(spec, run_input, workflow_id=spec["id"])
    make_celery(env["REDIS_URL"]).send_task("agentflow.run", args=[run_id], task_id=run_id, queue="runs")
    return run_id


def wait_end(store, run_id: str, timeout: float = 90) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        rec = store.get(run_id)
        if rec["status"] in ("succeeded", "failed", "cancelled"):
            return rec
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} did not end: {json.dumps(store.get(run_id), default=str)[:2000]}")


@contextlib.contextmanager
def api_client(dist_env: dict, monkeypatch, names=()):
    """An in-process API in distributed mode on this module's database and broker (auth off),
    with `names` copied from `dist_env` into the environment too."""
    from fastapi.testclient import TestClient

    from agentflow.api.main import create_app
    from agentflow.settings import Settings, get_settings
    from agentflow.workers import app as worker_app, dispatch

    for key in ("DATABASE_URL", "REDIS_URL", "AGENTFLOW_HOME", *names):
        monkeypatch.setenv(key, dist_env[key])
    monkeypatch.setenv("AGENTFLOW_AUTH", "off")
    monkeypatch.setenv("AGENTFLOW_LOAD_EXAMPLES", "0")
    # no abuse limits: this process's limiter remembers queues of earlier modules' Redis dbs,
    # and would start them cold here (a 429 for the first request); tests/security covers them
    monkeypatch.setenv("AGENTFLOW_RATE_TENANT_PER_MINUTE", "0")
    monkeypatch.setenv("AGENTFLOW_RATE_IP_PER_MINUTE", "0")
    # The process-wide Celery app reads REDIS_URL when first imported, maybe by an earlier
    # test module with another Redis db: send this module's tasks to its own broker.
    celery = worker_app.make_celery(dist_env["REDIS_URL"])
    monkeypatch.setattr(worker_app, "celery_app", celery)
    monkeypatch.setattr(dispatch, "celery_app", celery)
    get_settings.cache_clear()
    try:
        with TestClient(create_app(Settings())) as client:
            yield client
    finally:
        get_settings.cache_clear()
