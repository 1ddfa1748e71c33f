"""The limiter interface shared by the Redis and in-memory backends.

A caller asks `try_acquire`; when the answer is "not yet" it gets the number of seconds
to wait, so a Celery task can retry with that countdown instead of sleeping in a slot.
Token budgets are reserved with an estimate before a call and settled with the real
usage after it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class QueueLimits:
    id: str
    max_messages_per_second: float | None = None
    max_requests_per_minute: float | None = None
    max_tokens_per_minute: int | None = None
    burst_size: int | None = None
    sub_queues: tuple[tuple[str, float], ...] = ()  # (id, weight)

    @classmethod
    def from_spec(cls, queue, namespace: str = "") -> "QueueLimits":
        """Build from agentflow.graph.spec.Queue; namespace scopes ids (e.g. per tenant)."""
        qid = f"{namespace}:{queue.id}" if namespace else queue.id
        return cls(qid, queue.max_messages_per_second, queue.max_requests_per_minute,
                   queue.max_tokens_per_minute, queue.burst_size,
                   tuple((s.id, float(s.weight)) for s in queue.sub_queues))


@dataclass
class Decision:
    allowed: bool
    retry_after: float = 0.0          # seconds until it is worth asking again
    reservation: str | None = None    # pass to settle() after the call
    tokens_reserved: int = 0


@dataclass
class QueueStats:
    id: str
    rate_per_second: float = 0.0      # grants over the last window
    tokens_per_minute: float = 0.0    # settled tokens over the last minute
    waiting: dict[str, int] = field(default_factory=dict)   # per sub-queue
    granted: dict[str, int] = field(default_factory=dict)   # per sub-queue, lifetime


class Limiter(Protocol):
    def try_acquire(self, limits: QueueLimits, sub_queue: str | None = None, tokens: int = 0,
                    waiter: str | None = None) -> Decision: ...

    def acquire(self, limits: QueueLimits, sub_queue: str | None = None, tokens: int = 0,
                timeout: float | None = None) -> Decision:
        """Blocking helper (embedded mode): waits the advised time between tries."""
        ...

    def settle(self, limits: QueueLimits, decision: Decision, tokens_used: int) -> None: ...

    def stats(self, limits: QueueLimits) -> QueueStats: ...
