"""Pick the limiter for the running mode: Redis when `REDIS_URL` (or `REDIS_SENTINELS`) is
set, else in-process."""

from __future__ import annotations

import os
import threading
from typing import Mapping

from ..settings import RedisConfig
from .base import LimiterBase
from .memory import MemoryLimiter

DEFAULT_PREFIX = "af:rl"
_lock = threading.Lock()
_memory: MemoryLimiter | None = None
_redis: dict[tuple[RedisConfig, str], LimiterBase] = {}


def _slot_ttl() -> float:
    from agentflow.settings import get_settings

    return get_settings().concurrency_lease_s


def memory_limiter() -> MemoryLimiter:
    """The process-wide in-memory limiter (embedded mode)."""
    global _memory
    with _lock:
        if _memory is None:
            _memory = MemoryLimiter(slot_ttl=_slot_ttl())
        return _memory


def limiter_from_env(env: Mapping[str, str] | None = None) -> LimiterBase:
    """RedisLimiter on `REDIS_URL` or `REDIS_SENTINELS` (distributed mode), else the
    process-wide MemoryLimiter. `AGENTFLOW_RATELIMIT_PREFIX` changes the Redis key prefix."""
    env = os.environ if env is None else env
    config = RedisConfig.from_env(env)
    if config is None:
        return memory_limiter()
    return redis_limiter(config, env.get("AGENTFLOW_RATELIMIT_PREFIX"))


def redis_limiter(config: RedisConfig, prefix: str | None = None) -> LimiterBase:
    """The process's RedisLimiter on `config` (one object per Redis and key prefix;
    default prefix `af:rl`)."""
    from ..redisconn import async_redis_client, redis_client
    from .redis import RedisLimiter

    prefix = prefix or DEFAULT_PREFIX
    timeouts = {"socket_timeout": 2.0, "socket_connect_timeout": 2.0}
    with _lock:
        lim = _redis.get((config, prefix))
        if lim is None:
            # plain TCP: the limiter's own multiplexed connection serves async callers;
            # Sentinel: redis-py's async Sentinel client does
            aclient = (lambda: async_redis_client(config, **timeouts)) if config.sentinels else None
            lim = _redis[(config, prefix)] = RedisLimiter(redis_client(config, **timeouts), key_prefix=prefix,
                                                          where=config.describe(), async_client=aclient,
                                                          slot_ttl=_slot_ttl())
        return lim
