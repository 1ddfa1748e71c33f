"""Queue limits that hold across every worker (Redis) or inside one process (memory).

    limiter = limiter_from_env()              # RedisLimiter if REDIS_URL/REDIS_SENTINELS, else MemoryLimiter
    d = limiter.try_acquire(limits, sub_queue="paid", tokens=estimate, waiter=task_id)
    if not d.allowed: retry with countdown=d.retry_after
    ... call ...
    limiter.settle(limits, d, usage.total_tokens)
"""

from .base import (DEFAULT_SUB_QUEUE, Decision, LimitError, Limiter, LimiterBase, LimiterUnavailable,
                   QueueLimits, QueueStats, RateLimitExceeded)
from .factory import limiter_from_env, memory_limiter
from .memory import MemoryLimiter

__all__ = [
    "DEFAULT_SUB_QUEUE", "Decision", "LimitError", "Limiter", "LimiterBase", "LimiterUnavailable",
    "MemoryLimiter", "QueueLimits", "QueueStats", "RateLimitExceeded", "limiter_from_env",
    "memory_limiter",
]
