"""Fixtures for the limiter tests: both backends, a fake clock, a reachable Redis.

Redis: `AF_RL_REDIS_URL`, else `REDIS_URL`, else redis://127.0.0.1:6379/0. Tests that need
it are marked `redis` and fail, saying why, when it does not answer (tests/needs.py). Every test uses its
own key prefix and deletes its keys after.
"""

from __future__ import annotations

import uuid

import pytest

from agentflow.ratelimit import MemoryLimiter

from tests.needs import REDIS_URL, need_redis, redis_error


@pytest.fixture
def redis_url():
    need_redis(REDIS_URL)
    return REDIS_URL


@pytest.fixture
def key_prefix(request):
    prefix = f"af:rl:test:{uuid.uuid4().hex[:10]}"
    yield prefix
    if redis_error(REDIS_URL) is None:
        import redis
        r = redis.Redis.from_url(REDIS_URL)
        for k in r.scan_iter(match=prefix + ":*", count=1000):
            r.delete(k)


class FakeClock:
    """A clock the test moves by hand; `sleep` moves it too."""

    def __init__(self, t: float = 1_000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += max(seconds, 0.0)

    def advance(self, seconds: float) -> None:
        self.t += seconds


@pytest.fixture
def clock():
    return FakeClock()


BACKENDS = [pytest.param("memory", id="memory"),
            pytest.param("redis", id="redis", marks=pytest.mark.redis)]


def make_limiter(kind: str, clock: FakeClock, key_prefix: str, **kw):
    if kind == "memory":
        return MemoryLimiter(clock=clock, sleep=clock.sleep, **kw)
    need_redis(REDIS_URL)
    from agentflow.ratelimit.redis import RedisLimiter
    lim = RedisLimiter(REDIS_URL, key_prefix=key_prefix, clock=clock, **kw)
    lim._sleep = clock.sleep   # acquire() waits on the fake clock
    return lim


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


@pytest.fixture
def make(backend, clock, key_prefix):
    """make(**limiter_kwargs) -> a limiter of the parametrized backend on the fake clock."""
    return lambda **kw: make_limiter(backend, clock, key_prefix, **kw)


@pytest.fixture
def limiter(make):
    return make()
