"""The limiter interface shared by the Redis and in-memory backends.

A caller asks `try_acquire`; when the answer is "not yet" it gets the number of seconds
to wait, so a Celery task can retry with that countdown instead of sleeping in a slot.
Token budgets are reserved with an estimate before a call and settled with the real
usage after it.

The algorithm (both backends implement exactly this; `memory.py` is the readable
reference, `redis.py` the same steps in one Lua script):

* messages/second and requests/minute are two GCRA limits (emission interval
  ``T = 1/rate`` and ``T = 60/rpm``) sharing ``burst_size`` (default 1): a limit keeps a
  theoretical arrival time ``tat``; the next grant is allowed from ``tat - (burst - 1) * T``.
  A grant moves ``tat`` one interval on; a grant that came up to ``GCRA_SLACK`` intervals
  after ``tat`` keeps the schedule (``tat + T``: a worker that comes back a little late keeps
  its place instead of losing that time for good, which with burst 1 would lose every
  millisecond of wake-up and round-trip latency), a later one (or the first after an idle
  spell) restarts it from now (``now + T``). So the slack is only ever a late grant's
  credit, never an early grant: n grants from idle with burst 1 span at least n - 1
  intervals (the rate measured from the first call is never above the limit), at one
  instant at most ``burst`` grants pass, and any window of length L holds fewer than
  ``L/T + burst + GCRA_SLACK`` (so a 1 s window holds at most ``rate + burst_size``).
* tokens/minute is a sliding window of 60 seconds, as a provider counts its TPM (a charge
  stays ``TOKEN_MARGIN`` = 1 s longer, for the time the call takes to reach the provider):
  a grant is allowed when the tokens charged to the grants of the last 60 s plus
  the caller's estimate fit in ``max_tokens_per_minute``. A grant is charged its estimate
  at once; `settle` replaces it with the real usage reported by the provider (kept at the
  grant's time), so what the window holds is what the provider counted, and a call that
  used more than its estimate puts the window in debt (later grants wait for it). Any 60 s
  window then holds at most the budget plus what calls used beyond their estimates: unlike
  a token bucket refilling continuously, which lets a full bucket plus a minute of refill
  (2x the budget) through in one minute, a provider's TPM is never exceeded.
* a grant needs every configured limit to pass; a denial changes none of them.
* weighted sub-queues use start-time fair queueing over the sub-queues that have a
  registered waiter (a caller passing ``waiter=`` and denied is remembered until its
  retry time plus ``waiter_ttl``). Each sub-queue has a finish tag ``F``; its start tag is
  ``max(V, F)``; the grant goes to the smallest start tag (ties to the caller), then
  ``F += 1/weight`` and ``V`` becomes the smallest start tag among active sub-queues. An
  idle sub-queue has no waiters so its share is lent; when it comes back its start tag is
  lifted to ``V`` (no catch-up burst). When the chosen sub-queue does not claim an
  available grant within ``fair_grace`` seconds, the grant is lent to the caller.
* ``max_concurrency`` caps the grants in flight (granted and not yet settled), per
  ``concurrency_key`` when the caller names one. Each grant takes a slot: a lease in a set
  scored by its expiry, ``slot_ttl`` seconds ahead, which the running step renews (`holding`)
  and `settle` gives back; a slot whose holder died (a worker killed mid-step) is dropped
  once its lease expires. A full queue denies with reason "concurrency" and a countdown
  of ``CONCURRENCY_POLL`` (or less, when a lease expires sooner). It is checked with the
  other limits in the same step, so a denial still changes none of them.
* countdowns (``Decision.retry_after``): the time the limits allow the next grant, plus
  one interval for each grant that should go first: those the other active sub-queues get
  before this sub-queue's turn, and those of the waiters of the same sub-queue due before
  this one. A backlog of N tasks thus retries about once each per turn, not N times per
  grant. A caller denied because another sub-queue's turn is pending ("fair") is told to
  come back when that grant would be lent.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Iterator, Protocol

__all__ = [
    "DEFAULT_SUB_QUEUE", "Decision", "LimitError", "Limiter", "LimiterBase", "LimiterUnavailable",
    "QueueLimits", "QueueStats", "RateLimitExceeded",
]

# Extra GCRA tolerance, in emission intervals (must stay < 1; see the module docstring).
GCRA_SLACK = 0.5

# tokens/minute is counted over a sliding window of 60 s (a provider's TPM). A charge stays
# in it TOKEN_MARGIN s longer: the call reaches the provider a little after its grant, and a
# jitter in that delay must not land two calls granted 60 s apart in one provider minute.
TOKEN_MARGIN = 1.0
TOKEN_WINDOW = 60.0 + TOKEN_MARGIN

# Callers that name no sub-queue, or one the queue does not declare, share this one (weight 1).
DEFAULT_SUB_QUEUE = "default"

# max_concurrency: seconds a caller denied for a full queue waits before asking again (slots
# come free when steps end, which no clock predicts), and the default lease of a slot.
CONCURRENCY_POLL = 0.1
DEFAULT_SLOT_TTL = 30.0
_MAX_KEY = 200  # longer concurrency keys are hashed (they name a Redis key)

log = logging.getLogger(__name__)


def slot_key(concurrency_key: str | None) -> str:
    """The concurrency key as the limiters store it: '' for none, hashed when long."""
    if not concurrency_key:
        return ""
    if len(concurrency_key) > _MAX_KEY:
        return "#" + hashlib.sha256(concurrency_key.encode()).hexdigest()
    return concurrency_key


class LimitError(RuntimeError):
    """An error of the limiter, worded for the person reading the run; `retryable` says
    whether asking again later can help. (Not a graph StepError: ratelimit/ imports
    nothing of the engine; graph/step.py reports any error that carries `retryable`.)"""

    retryable = False

    def __init__(self, message: str, *, retryable: bool | None = None):
        super().__init__(message)
        if retryable is not None:
            self.retryable = retryable


class LimiterUnavailable(LimitError):
    """The limiter's backend (Redis) cannot be reached; nothing was granted. Retry later."""

    retryable = True


class RateLimitExceeded(LimitError):
    """A call can never fit the queue's budget (e.g. bigger than tokens/minute)."""


@dataclass(frozen=True)
class QueueLimits:
    id: str
    max_messages_per_second: float | None = None
    max_requests_per_minute: float | None = None
    max_tokens_per_minute: int | None = None
    burst_size: int | None = None
    sub_queues: tuple[tuple[str, float], ...] = ()  # (id, weight)
    max_concurrency: int | None = None  # grants in flight at once (per concurrency key)

    def __post_init__(self):
        if self.max_concurrency is not None and self.max_concurrency < 1:
            raise ValueError(f"queue {self.id!r}: max_concurrency must be >= 1, got {self.max_concurrency!r}")
        for name in ("max_messages_per_second", "max_requests_per_minute", "max_tokens_per_minute"):
            v = getattr(self, name)
            if v is not None and not v > 0:
                raise ValueError(f"queue {self.id!r}: {name} must be > 0, got {v!r}")
        if self.burst_size is not None and self.burst_size < 1:
            raise ValueError(f"queue {self.id!r}: burst_size must be >= 1, got {self.burst_size!r}")
        seen = set()
        for sid, w in self.sub_queues:
            if sid in seen:
                raise ValueError(f"queue {self.id!r}: duplicate sub-queue {sid!r}")
            if not w > 0:
                raise ValueError(f"queue {self.id!r}: sub-queue {sid!r} weight must be > 0")
            seen.add(sid)

    @classmethod
    def of(cls, limits) -> "QueueLimits":
        """`limits` itself, or the QueueLimits of what the engine charges a node to
        (graph/step.py QueueCharge): an `id` and a spec `queue` (the fields above, its
        sub_queues with `id` and `weight`). Read by name: ratelimit/ imports no graph/."""
        if type(limits) is cls:
            return limits
        q = limits.queue
        return cls(limits.id, q.max_messages_per_second, q.max_requests_per_minute, q.max_tokens_per_minute,
                   q.burst_size, tuple((s.id, float(s.weight)) for s in q.sub_queues),
                   getattr(q, "max_concurrency", None))

    # ---- derived figures the backends share
    @property
    def burst(self) -> int:
        return self.burst_size or 1

    @property
    def gcra_tolerance(self) -> float:
        """GCRA tolerance tau in emission intervals: burst - 1 + GCRA_SLACK (the window bound)."""
        return self.burst - 1 + GCRA_SLACK

    @property
    def burst_tolerance(self) -> float:
        """How far ahead of ``tat`` a grant may come, in emission intervals: burst - 1."""
        return float(self.burst - 1)

    @property
    def message_interval(self) -> float:
        """GCRA emission interval for messages/s (0 = no such limit)."""
        return 1.0 / self.max_messages_per_second if self.max_messages_per_second else 0.0

    @property
    def request_interval(self) -> float:
        """GCRA emission interval for requests/min (0 = no such limit)."""
        return 60.0 / self.max_requests_per_minute if self.max_requests_per_minute else 0.0

    @property
    def rate_per_second(self) -> float | None:
        """The binding message rate per second, or None when only tokens are limited."""
        iv = max(self.message_interval, self.request_interval)
        return 1.0 / iv if iv else None

    @property
    def sub_queue_weights(self) -> tuple[tuple[str, float], ...]:
        """Declared sub-queues plus the implicit default one (weight 1) if not declared."""
        subs = tuple(self.sub_queues)
        if DEFAULT_SUB_QUEUE not in {s for s, _ in subs}:
            subs = subs + ((DEFAULT_SUB_QUEUE, 1.0),)
        return subs

    def resolve_sub_queue(self, sub_queue: str | None) -> str:
        if sub_queue and any(s == sub_queue for s, _ in self.sub_queues):
            return sub_queue
        return DEFAULT_SUB_QUEUE

    def default_fair_grace(self) -> float:
        """How long a grant is kept for the sub-queue whose turn it is, between 2 ms and 1 s
        (50 ms when only tokens are limited): one emission interval when the burst allows
        it, else half of one. A grant held that long still fits in the GCRA tolerance
        (`gcra_tolerance` - 0.5 intervals), so holding it costs no rate; and a Celery task
        coming back from its countdown is often tens of ms late, with a tail of hundreds
        (tests/ratelimit/test_celery_limits.py): half an interval at 4/s lent ~1 turn in
        20 of the sub-queue whose waiter was a little late."""
        iv = max(self.message_interval, self.request_interval)
        if not iv:
            return 0.05
        intervals = max(0.5, min(1.0, self.gcra_tolerance - 0.5))
        return min(max(intervals * iv, 0.002), 1.0)

    def check_tokens(self, tokens: int) -> int:
        """Tokens to reserve for a call estimated at `tokens`; raises when it can never fit."""
        if tokens < 0:
            raise ValueError(f"tokens must be >= 0, got {tokens!r}")
        cap = self.max_tokens_per_minute
        if not cap:
            return 0
        if tokens > cap:
            raise RateLimitExceeded(
                f"queue {self.id!r}: a call estimated at {tokens} tokens can never run, the queue "
                f"allows at most max_tokens_per_minute={cap}; lower the prompt or max_tokens, "
                f"or raise the queue's limit", retryable=False)
        return int(tokens)


@dataclass
class Decision:
    allowed: bool
    retry_after: float = 0.0          # seconds until it is worth asking again
    reservation: str | None = None    # pass to settle() after the call
    tokens_reserved: int = 0
    at: float = 0.0                   # limiter clock at the decision (Redis: server TIME, epoch s)
    reason: str = ""                  # "ok", or why not: "rate", "rpm", "tokens", "fair", "concurrency"
    sub_queue: str | None = None      # the sub-queue the decision was made for
    slot: str | None = None           # max_concurrency: the slot this grant holds until settle()
    slot_key: str = ""                # ... under this concurrency key ('' = the whole queue)


@dataclass
class QueueStats:
    id: str
    rate_per_second: float = 0.0      # grants per second over the last ~15 s
    tokens_per_minute: float = 0.0    # settled (really used) tokens over the last minute
    waiting: dict[str, int] = field(default_factory=dict)   # per sub-queue
    granted: dict[str, int] = field(default_factory=dict)   # per sub-queue, lifetime
    requests_per_minute: float = 0.0  # grants over the last minute
    tokens_available: float | None = None  # budget left in the sliding minute now (None: no token limit)
    at: float = 0.0                   # limiter clock when read
    in_flight: int = 0                # max_concurrency: slots held now (all keys)
    in_flight_by_key: dict[str, int] = field(default_factory=dict)  # per concurrency key ('' = none)


class Limiter(Protocol):
    """`limits`: a QueueLimits, or plain data with its fields (`QueueLimits.of`)."""

    def try_acquire(self, limits: QueueLimits, sub_queue: str | None = None, tokens: int = 0,
                    waiter: str | None = None, concurrency_key: str | None = None) -> Decision: ...

    def acquire(self, limits: QueueLimits, sub_queue: str | None = None, tokens: int = 0,
                timeout: float | None = None, concurrency_key: str | None = None) -> Decision:
        """Blocking helper (embedded mode): waits the advised time between tries."""
        ...

    def settle(self, limits: QueueLimits, decision: Decision, tokens_used: int) -> None:
        """After the call: the real token usage replaces the estimate, the slot is given back."""
        ...

    def renew(self, limits: QueueLimits, decision: Decision) -> None:
        """Extend the lease of the decision's concurrency slot (the step still runs)."""
        ...

    def stats(self, limits: QueueLimits) -> QueueStats: ...

    def forget(self, limits: QueueLimits, sub_queue: str | None, waiter: str) -> None:
        """Withdraw a waiter registration (the task gave up, was cancelled, went elsewhere)."""
        ...


# Live figures are counted in buckets of BUCKET seconds; BUCKETS of them are kept.
BUCKET = 5
BUCKETS = 13
RATE_WINDOW = 15   # seconds behind QueueStats.rate_per_second


def summarize(grants: dict[int, int], tokens: dict[int, int], now: float) -> tuple[float, float, float]:
    """(grants per second over ~RATE_WINDOW s, grants per minute, tokens per minute) from
    per-bucket counts {bucket index (= floor(t / BUCKET)): count}. The windows end now and
    start at a bucket boundary, so they cover (n - 1) whole buckets plus the current part."""
    cur = math.floor(now / BUCKET)
    part = now - cur * BUCKET

    def per_second(counts: dict[int, int], window: int) -> float:
        nb = window // BUCKET
        total = sum(c for b, c in counts.items() if cur - nb < b <= cur)
        return total / ((nb - 1) * BUCKET + part) if total else 0.0

    return per_second(grants, RATE_WINDOW), per_second(grants, 60) * 60, per_second(tokens, 60) * 60


class LimiterBase:
    """What both backends share: the blocking `acquire` built on `try_acquire`."""

    slot_ttl: float = DEFAULT_SLOT_TTL  # lease of a concurrency slot, renewed by `holding`

    def renew(self, limits: QueueLimits, decision: Decision) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def holding(self, limits, decision: Decision | None):
        """A context manager keeping the decision's concurrency slot leased while a step runs
        (see `holding`); the engine calls it without importing ratelimit/."""
        return holding(self, QueueLimits.of(limits), decision)

    def _sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def _now(self) -> float:
        return time.monotonic()

    def try_acquire(self, limits: QueueLimits, sub_queue: str | None = None, tokens: int = 0,
                    waiter: str | None = None, concurrency_key: str | None = None
                    ) -> Decision:  # pragma: no cover - abstract
        raise NotImplementedError

    def forget(self, limits: QueueLimits, sub_queue: str | None, waiter: str) -> None:  # pragma: no cover
        raise NotImplementedError

    def acquire(self, limits: QueueLimits, sub_queue: str | None = None, tokens: int = 0,
                timeout: float | None = None, waiter: str | None = None,
                concurrency_key: str | None = None) -> Decision:
        """Ask until granted (sleeping the advised time) or until `timeout` seconds passed.

        Returns the granted Decision, or the last denial when the timeout would be hit
        first (the waiter registration is then withdrawn)."""
        limits = QueueLimits.of(limits)
        limits.check_tokens(tokens)
        waiter = waiter or uuid.uuid4().hex
        deadline = None if timeout is None else self._now() + timeout
        while True:
            d = self.try_acquire(limits, sub_queue, tokens, waiter=waiter, concurrency_key=concurrency_key)
            if d.allowed:
                return d
            wait = d.retry_after
            if deadline is not None:
                left = deadline - self._now()
                if wait > left:
                    self.forget(limits, sub_queue, waiter)
                    return d
            self._sleep(max(wait, 0.0))


@contextlib.contextmanager
def holding(limiter, limits: QueueLimits, decision: Decision | None) -> Iterator[None]:
    """Keep a granted concurrency slot's lease alive while the step runs: renewed every third
    of `limiter.slot_ttl` by a thread that stops with the block (or with the process: then
    the lease lapses and the slot comes free). Nothing happens for a grant without a slot."""
    if decision is None or decision.slot is None:
        yield
        return
    stop = threading.Event()
    period = max(limiter.slot_ttl / 3, 0.05)

    def renew() -> None:
        while not stop.wait(period):
            try:
                limiter.renew(limits, decision)
            except Exception as exc:  # a blip: the next renewal may make it, else the lease lapses
                log.warning("queue %s: could not renew a concurrency slot: %s", limits.id, exc)

    thread = threading.Thread(target=renew, daemon=True, name=f"slot:{limits.id}")
    thread.start()
    try:
        yield
    finally:
        stop.set()
