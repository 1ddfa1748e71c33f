"""Pick the limiter for the running mode: Redis when `REDIS_URL` is set, else in-process."""

from __future__ import annotations

import os
import threading
from typing import Mapping

from .base import LimiterBase
from .memory import MemoryLimiter

_lock = threading.Lock()
_memory: MemoryLimiter | None = None
_redis: dict[tuple[str, str], LimiterBase] = {}


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
    """RedisLimiter on `REDIS_URL` (distributed mode), else the process-wide MemoryLimiter.

    `AGENTFLOW_RATELIMIT_PREFIX` changes the Redis key prefix (default `af:rl`). The same
    limiter object is returned for the same URL and prefix.
    """
    env = os.environ if env is None else env
    url = env.get("REDIS_URL")
    if not url:
        return memory_limiter()
    prefix = env.get("AGENTFLOW_RATELIMIT_PREFIX") or "af:rl"
    from .redis import RedisLimiter
    with _lock:
        lim = _redis.get((url, prefix))
        if lim is None:
            lim = _redis[(url, prefix)] = RedisLimiter(url, key_prefix=prefix, slot_ttl=_slot_ttl())
        return lim
