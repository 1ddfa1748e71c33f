"""In-process limiter (embedded mode): the reference implementation of the algorithm.

`redis.py` runs the same steps in a Lua script; keep the two in step (the tests run the
same cases against both). All state lives in this object, guarded by one lock, so it
holds across the threads of one process only.
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

from .base import (BUCKET, BUCKETS, CONCURRENCY_POLL, DEFAULT_SLOT_TTL, GCRA_SLACK, TOKEN_WINDOW, Decision,
                   LimiterBase, QueueLimits, QueueStats, slot_key, summarize)

NEG = -math.inf
EPS = 1e-6   # a grant due within a microsecond is due now (float noise)


@dataclass
class _QueueState:
    tat_m: float | None = None        # GCRA theoretical arrival time, messages/s
    tat_r: float | None = None        # GCRA theoretical arrival time, requests/min
    # tokens/minute: the charges of the last TOKEN_WINDOW s, oldest first, as [time, tokens,
    # reservation]; `spent` is their sum, `charges` finds one by its reservation (settle)
    window: deque = field(default_factory=deque)
    charges: dict[str, list] = field(default_factory=dict)
    spent: float = 0.0
    vtime: float = 0.0                # fair-queueing virtual time V
    finish: dict[str, float] = field(default_factory=dict)     # finish tag F per sub-queue
    need: dict[str, int] = field(default_factory=dict)         # last waiting token need
    waiters: dict[str, dict[str, float]] = field(default_factory=dict)  # sub -> waiter -> expiry
    granted: dict[str, int] = field(default_factory=dict)
    grant_buckets: dict[int, int] = field(default_factory=dict)   # floor(t / BUCKET) -> grants
    token_buckets: dict[int, int] = field(default_factory=dict)   # floor(t / BUCKET) -> tokens used
    slots: dict[str, dict[str, float]] = field(default_factory=dict)  # concurrency key -> slot -> expiry

    def held(self, key: str, now: float) -> dict[str, float]:
        """The live slots of a concurrency key (expired leases dropped)."""
        slots = self.slots.get(key)
        if slots is None:
            return {}
        for k in [k for k, e in slots.items() if e <= now]:
            del slots[k]
        return slots


def _expire(st: _QueueState, now: float) -> None:
    """Drop the token charges that left the sliding window."""
    w = st.window
    while w and w[0][0] <= now - TOKEN_WINDOW:
        at, tokens, res = w.popleft()
        st.spent -= tokens
        st.charges.pop(res, None)
    if not w:
        st.spent = 0.0  # no float drift across idle periods


def _tokens_free_at(st: _QueueState, cap: float, q: float) -> float:
    """When `q` tokens fit in the window (NEG: now): the time the oldest charges leave it."""
    if st.spent + q <= cap:
        return NEG
    over = st.spent + q - cap
    for at, tokens, _ in st.window:
        over -= tokens
        if over <= 1e-9:
            return at + TOKEN_WINDOW
    return st.window[-1][0] + TOKEN_WINDOW if st.window else NEG


def _next_tat(tat: float | None, now: float, interval: float) -> float:
    """GCRA after a grant. A grant up to GCRA_SLACK intervals after its due time keeps the
    schedule (a waiter coming back a little late loses nothing); later, or after an idle
    spell, the schedule restarts from now: the slack is never spent as an early grant, so
    n grants from idle span at least (n - 1) intervals."""
    if tat is None or tat < now - GCRA_SLACK * interval:
        return now + interval
    return tat + interval


def _count(buckets: dict[int, int], now: float, n: int) -> None:
    b = math.floor(now / BUCKET)
    if b not in buckets:
        for k in [k for k in buckets if k <= b - BUCKETS]:
            del buckets[k]
    buckets[b] = buckets.get(b, 0) + n


class MemoryLimiter(LimiterBase):
    """Thread-safe limiter for one process.

    `clock` (default `time.monotonic`) and `sleep` can be injected for tests.
    `waiter_ttl`: how long a denied waiter stays registered past its retry time.
    `fair_grace`: seconds an available grant is kept for the sub-queue whose turn it is
    (default: `QueueLimits.default_fair_grace()`).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep,
                 waiter_ttl: float = 10.0, fair_grace: float | None = None,
                 slot_ttl: float = DEFAULT_SLOT_TTL):
        self.slot_ttl = slot_ttl
        self._clock = clock
        self._sleep_fn = sleep
        self.waiter_ttl = waiter_ttl
        self.fair_grace = fair_grace
        self._lock = threading.Lock()
        self._queues: dict[str, _QueueState] = {}
        self._settled: dict[str, float] = {}   # reservation -> expiry (settle is idempotent)

    def _sleep(self, seconds: float) -> None:
        self._sleep_fn(seconds)

    def _now(self) -> float:
        return self._clock()

    def reset(self) -> None:
        """Forget every queue (tests)."""
        with self._lock:
            self._queues.clear()
            self._settled.clear()

    # ------------------------------------------------------------------ acquire
    def try_acquire(self, limits: QueueLimits, sub_queue: str | None = None, tokens: int = 0,
                    waiter: str | None = None, concurrency_key: str | None = None) -> Decision:
        limits = QueueLimits.of(limits)
        need = limits.check_tokens(tokens)
        mc = limits.max_concurrency or 0
        ck = slot_key(concurrency_key)
        x = limits.resolve_sub_queue(sub_queue)
        tol = limits.burst_tolerance
        tm_iv, tr_iv = limits.message_interval, limits.request_interval
        cap = limits.max_tokens_per_minute or 0
        grace = self.fair_grace if self.fair_grace is not None else limits.default_fair_grace()
        with self._lock:
            now = self._clock()
            st = self._queues.get(limits.id)
            if st is None:
                st = self._queues[limits.id] = _QueueState()

            # 1. when do the rate limits allow the next grant (unclamped: may be long ago)
            allow, why = NEG, "ok"
            if tm_iv and st.tat_m is not None and st.tat_m - tol * tm_iv > allow:
                allow, why = st.tat_m - tol * tm_iv, "rate"
            if tr_iv and st.tat_r is not None and st.tat_r - tol * tr_iv > allow:
                allow, why = st.tat_r - tol * tr_iv, "rpm"

            # 2. tokens: what the grants of the last minute were charged (sliding window)
            if cap:
                _expire(st, now)

            def since(q: float) -> float:   # when q more tokens fit in the window
                return _tokens_free_at(st, cap, q) if cap else NEG

            def avail(q: float) -> float:
                return max(allow, since(q))

            ax = avail(need)
            reason = None
            if ax > now + EPS:
                reason = "tokens" if since(need) > allow else why

            # 2b. concurrency: a free slot (expired leases dropped)
            if reason is None and mc:
                held = st.held(ck, now)
                if len(held) >= mc:
                    reason = "concurrency"
                    ax = now + min(CONCURRENCY_POLL, min(held.values()) - now)

            # 3. which sub-queues are active (have a live waiter); the caller always is
            subs = limits.sub_queue_weights
            weight = dict(subs)
            active = [x]
            for s, _w in subs:
                if s != x:
                    ws = st.waiters.get(s)
                    if ws and any(e > now for e in ws.values()):
                        active.append(s)

            # 4. weighted fair share: the grant goes to the smallest start tag max(V, F)
            V = st.vtime
            sx = max(V, st.finish.get(x, 0.0))
            if reason is None and len(active) > 1:
                smin, y = sx, x
                for s in active[1:]:
                    ss = max(V, st.finish.get(s, 0.0))
                    if ss < smin:
                        smin, y = ss, s
                if y != x:
                    ay = avail(st.need.get(y, 0))
                    if now < ay + grace:
                        reason, ax = "fair", ay + grace

            if reason is None:  # grant: commit every limit
                if tm_iv:
                    st.tat_m = _next_tat(st.tat_m, now, tm_iv)
                if tr_iv:
                    st.tat_r = _next_tat(st.tat_r, now, tr_iv)
                reservation = None
                if cap:
                    reservation = uuid.uuid4().hex
                    entry = [now, need, reservation]
                    st.window.append(entry)
                    st.charges[reservation] = entry
                    st.spent += need
                if len(subs) > 1:
                    fx = sx + 1.0 / weight[x]
                    st.finish[x] = fx
                    st.vtime = min([fx] + [max(V, st.finish.get(s, 0.0)) for s in active[1:]])
                if waiter is not None:
                    ws = st.waiters.get(x)
                    if ws:
                        ws.pop(waiter, None)
                st.granted[x] = st.granted.get(x, 0) + 1
                _count(st.grant_buckets, now, 1)
                slot = None
                if mc:
                    slot = uuid.uuid4().hex
                    st.slots.setdefault(ck, {})[slot] = now + self.slot_ttl
                return Decision(True, 0.0, reservation, need, now, "ok", x, slot, ck)

            # 5. not yet. The countdown counts the grants that go first: those the other
            # active sub-queues get before our start tag is the smallest, and those of the
            # waiters of our sub-queue due before us (f grants per one of ours), so waiters
            # do not all come back for the same grant.
            ws = st.waiters.setdefault(x, {}) if waiter is not None else {}
            for k in [k for k, e in ws.items() if e <= now]:
                del ws[k]
            if reason not in ("fair", "concurrency"):
                ahead = 0.0
                wsum = weight[x]
                for o in active[1:]:
                    wsum += weight[o]
                    so = max(V, st.finish.get(o, 0.0))
                    if sx > so:
                        ahead += math.ceil((sx - so) * weight[o] - 1e-9)
                if waiter is not None:
                    if waiter in ws:
                        mine = (ws[waiter], waiter)
                        rank = sum(1 for k, e in ws.items() if (e, k) < mine)
                    else:
                        rank = len(ws)
                    ahead += rank * wsum / weight[x]
                if ahead > 0:
                    ax += ahead * max(tm_iv, tr_iv)
                    if cap:  # the waiters ahead first, each about the window's mean charge
                        mean = min(need, st.spent / len(st.window)) if st.window else need
                        q = need + ahead * mean
                        whole = math.floor((q - 1e-9) / cap)
                        ax = max(ax, max(since(q - whole * cap), now) + whole * TOKEN_WINDOW)
            if waiter is not None:
                ws[waiter] = ax + self.waiter_ttl
                if len(subs) > 1:
                    st.need[x] = need
            return Decision(False, ax - now, None, 0, now, reason, x)

    def forget(self, limits: QueueLimits, sub_queue: str | None, waiter: str) -> None:
        """Withdraw a waiter registration (the task gave up or went elsewhere)."""
        limits = QueueLimits.of(limits)
        x = limits.resolve_sub_queue(sub_queue)
        with self._lock:
            st = self._queues.get(limits.id)
            if st and x in st.waiters:
                st.waiters[x].pop(waiter, None)

    # ------------------------------------------------------------------ settle
    def renew(self, limits: QueueLimits, decision: Decision) -> None:
        """Extend the lease of the decision's concurrency slot, if it still holds it."""
        if decision.slot is None:
            return
        with self._lock:
            st = self._queues.get(limits.id)
            held = st.held(decision.slot_key, self._clock()) if st else {}
            if decision.slot in held:
                held[decision.slot] = self._clock() + self.slot_ttl

    def settle(self, limits: QueueLimits, decision: Decision, tokens_used: int) -> None:
        """Replace the reserved estimate by the real usage (idempotent per reservation) and
        give the concurrency slot back."""
        limits = QueueLimits.of(limits)
        if tokens_used < 0:
            raise ValueError(f"tokens_used must be >= 0, got {tokens_used!r}")
        if decision.slot is not None:
            with self._lock:
                st = self._queues.get(limits.id)
                if st is not None:
                    st.slots.get(decision.slot_key, {}).pop(decision.slot, None)
        cap = limits.max_tokens_per_minute
        if not cap or not decision.allowed or not decision.reservation:
            return
        with self._lock:
            now = self._clock()
            if decision.reservation in self._settled:
                return
            self._settled[decision.reservation] = now + 600.0   # as Redis: SETTLED_TTL
            if len(self._settled) > 100_000:
                for k in [k for k, e in self._settled.items() if e <= now]:
                    del self._settled[k]
            st = self._queues.get(limits.id)
            if st is None:
                return
            # the real usage replaces the estimate in the window, at the grant's time (when the
            # provider counted it); a charge that already left the window is not brought back
            entry = st.charges.get(decision.reservation)
            if entry is not None:
                st.spent += tokens_used - entry[1]
                entry[1] = tokens_used
            if tokens_used:
                _count(st.token_buckets, now, int(tokens_used))

    # ------------------------------------------------------------------ stats
    def stats(self, limits: QueueLimits) -> QueueStats:
        limits = QueueLimits.of(limits)
        with self._lock:
            now = self._clock()
            st = self._queues.get(limits.id) or _QueueState()
            subs = [s for s, _ in limits.sub_queue_weights]
            waiting = {s: sum(1 for e in st.waiters.get(s, {}).values() if e > now) for s in subs}
            granted = {s: st.granted.get(s, 0) for s in subs}
            rate, per_min, tok_min = summarize(st.grant_buckets, st.token_buckets, now)
            level = None
            cap = limits.max_tokens_per_minute
            if cap:
                _expire(st, now)
                level = float(cap) - st.spent
            by_key = {k: n for k in list(st.slots) if (n := len(st.held(k, now)))}
            return QueueStats(limits.id, rate, tok_min, waiting, granted, per_min, level, now,
                              sum(by_key.values()), by_key)
