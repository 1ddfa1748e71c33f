"""What a test needs from the machine (PostgreSQL, Redis, redis-server, chromium) and what
happens when it is missing: the test FAILS, naming what is missing.

Only an explicit `make test-fast` (which sets AGENTFLOW_TEST_ALLOW_SKIP=1) turns these
failures into skips; `make test` and `.ci/run` never do, and a run that skipped anything
fails (tests/skip_policy.py). Every test that depends on a service goes through here.
"""

from __future__ import annotations

import functools
import os
import shutil
from typing import NoReturn

import pytest

ALLOW_SKIP_ENV = "AGENTFLOW_TEST_ALLOW_SKIP"
REDIS_URL = os.environ.get("AF_RL_REDIS_URL") or os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"


def skips_allowed() -> bool:
    return os.environ.get(ALLOW_SKIP_ENV, "").strip().lower() in ("1", "true", "yes")


def missing(reason: str) -> NoReturn:
    """This test cannot run because of `reason`: fail (skip only under `make test-fast`)."""
    if skips_allowed():
        pytest.skip(reason)
    pytest.fail(f"{reason}. A missing service fails the test; `make test-fast` "
                f"({ALLOW_SKIP_ENV}=1) is the only way to run without it.", pytrace=False)


@functools.lru_cache(maxsize=1)
def pg_base_url() -> str | None:
    """The first reachable PostgreSQL URL, or None."""
    import psycopg

    candidates = [os.environ.get("AGENTFLOW_TEST_PG_URL"),
                  "postgresql://postgres@127.0.0.1:5432/test",
                  "postgresql://root@127.0.0.1:5432/test"]
    for url in filter(None, candidates):
        try:
            with psycopg.connect(url, connect_timeout=3):
                return url
        except psycopg.Error:
            continue
    return None


def need_postgres(why: str = "") -> str:
    """The base URL of the local PostgreSQL (database 'test'), or the test fails."""
    url = pg_base_url()
    if url is None:
        missing("PostgreSQL is not reachable at 127.0.0.1:5432 (database 'test', user postgres or root)"
                + (f"; {why}" if why else "") + " - run scripts/services.sh or set AGENTFLOW_TEST_PG_URL")
    return url


@functools.lru_cache(maxsize=None)
def redis_error(url: str = REDIS_URL) -> str | None:
    """None when Redis answers at `url`, else why not (asked once per URL)."""
    try:
        import redis

        redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1).ping()
        return None
    except Exception as exc:  # noqa: BLE001 - any failure means "not usable"
        return f"Redis is not reachable at {url} ({exc})"


def need_redis(url: str = REDIS_URL):
    """A client of the Redis at `url` (its path is the db number), or the test fails."""
    import redis

    why = redis_error(url)
    if why:
        missing(f"{why} - run scripts/services.sh or set AF_RL_REDIS_URL")
    return redis.Redis.from_url(url, socket_connect_timeout=2)


def need_redis_server() -> str:
    """The redis-server binary (tests that start a private Redis), or the test fails."""
    path = shutil.which("redis-server")
    if path is None:
        missing("redis-server is not installed (apt-get install -y redis-server); this test starts a private one")
    return path
