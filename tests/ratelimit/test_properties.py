"""Properties that hold for any sequence of calls; and Redis answers exactly as memory does."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentflow.ratelimit import MemoryLimiter, QueueLimits

from tests.needs import REDIS_URL, need_redis

from .conftest import FakeClock, make_limiter

limits_st = st.builds(
    QueueLimits,
    id=st.just("p"),
    max_messages_per_second=st.one_of(st.none(), st.sampled_from([0.5, 2.0, 10.0, 25.0])),
    max_requests_per_minute=st.one_of(st.none(), st.sampled_from([30.0, 120.0, 900.0])),
    max_tokens_per_minute=st.one_of(st.none(), st.sampled_from([600, 6000])),
    burst_size=st.one_of(st.none(), st.integers(1, 6)),
    sub_queues=st.sampled_from([(), (("paid", 3.0), ("free", 1.0)), (("a", 1.0), ("b", 2.0), ("c", 5.0))]),
)
op_st = st.tuples(
    st.sampled_from([0.0, 0.0, 0.001, 0.01, 0.05, 0.2, 1.0, 7.0]),      # clock step before the call
    st.sampled_from([None, "paid", "free", "a", "b", "c", "other"]),      # sub-queue
    st.sampled_from([0, 10, 100, 500]),                                   # tokens
    st.integers(0, 5),                                                    # waiter
    st.one_of(st.none(), st.integers(0, 700)),                            # settle with this usage
)


@settings(max_examples=300, deadline=None)
@given(limits=limits_st, ops=st.lists(op_st, max_size=80))
def test_grants_never_exceed_rate_plus_burst(limits, ops):
    clock = FakeClock()
    lim = MemoryLimiter(clock=clock)
    granted = []
    for dt, sub, tokens, w, _ in ops:
        clock.advance(dt)
        tokens = min(tokens, limits.max_tokens_per_minute or tokens)
        if lim.try_acquire(limits, sub, tokens, waiter=f"w{w}").allowed:
            granted.append(clock.t)
    iv = max(limits.message_interval, limits.request_interval)
    if not iv:
        return
    tau = limits.gcra_tolerance * iv
    for i in range(len(granted)):
        for j in range(i + 1, len(granted)):
            # GCRA conformance: n grants need at least (n - 1) * T - tau of time
            assert granted[j] - granted[i] >= (j - i) * iv - tau - 1e-6
    for t in granted:
        assert sum(1 for u in granted if u == t) <= limits.burst
        in_window = sum(1 for u in granted if t <= u < t + 1.0)
        assert in_window <= 1.0 / iv + limits.burst + 1e-9


@settings(max_examples=300, deadline=None)
@given(ops=st.lists(st.tuples(st.sampled_from([0.0, 0.1, 1.0, 5.0]), st.integers(1, 600),
                              st.integers(0, 900)), max_size=60))
def test_token_budget_is_never_overspent(ops):
    """Any sliding 60 s window holds at most the budget plus what its calls used beyond
    their estimates (the budget is a provider's TPM: a sliding minute, not a bucket)."""
    clock = FakeClock()
    lim = MemoryLimiter(clock=clock)
    q = QueueLimits("t", max_tokens_per_minute=600)
    calls = []  # (time, used, used beyond the estimate)
    for dt, est, used in ops:
        clock.advance(dt)
        d = lim.try_acquire(q, tokens=est)
        if d.allowed:
            lim.settle(q, d, used)
            calls.append((clock.t, used, max(0, used - est)))
        else:
            assert d.retry_after > 0
    for t, _, _ in calls:
        window = [c for c in calls if t <= c[0] < t + 60]
        assert sum(c[1] for c in window) <= 600 + sum(c[2] for c in window) + 1e-6


@settings(max_examples=200, deadline=None)
@given(limits=limits_st, gaps=st.lists(st.sampled_from([0.0, 0.001, 0.02, 0.1]), min_size=2, max_size=60))
def test_grants_from_idle_never_outpace_the_limit(limits, gaps):
    """However often callers ask, n grants from an idle queue span at least (n - burst)
    intervals: the slack is a late grant's credit, never an early grant."""
    clock = FakeClock()
    lim = MemoryLimiter(clock=clock)
    granted = []
    for dt in gaps:
        clock.advance(dt)
        if lim.try_acquire(limits, None, 0).allowed:
            granted.append(clock.t)
    iv = max(limits.message_interval, limits.request_interval)
    if not iv or len(granted) < 2:
        return
    assert granted[-1] - granted[0] >= (len(granted) - limits.burst) * iv - 1e-6


@pytest.mark.redis
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(limits=limits_st, ops=st.lists(op_st, max_size=60))
def test_redis_answers_exactly_like_memory(limits, ops, key_prefix):
    """Same calls on the same fake clock: same decisions, same stats (Lua == Python)."""
    need_redis(REDIS_URL)
    import uuid
    limits = QueueLimits(uuid.uuid4().hex[:8], limits.max_messages_per_second,
                         limits.max_requests_per_minute, limits.max_tokens_per_minute,
                         limits.burst_size, limits.sub_queues)
    clock = FakeClock()
    mem = make_limiter("memory", clock, key_prefix)
    red = make_limiter("redis", clock, key_prefix)
    for dt, sub, tokens, w, used in ops:
        clock.advance(dt)
        tokens = min(tokens, limits.max_tokens_per_minute or tokens)
        a = mem.try_acquire(limits, sub, tokens, waiter=f"w{w}")
        b = red.try_acquire(limits, sub, tokens, waiter=f"w{w}")
        assert (a.allowed, a.reason, a.sub_queue, a.tokens_reserved) == \
               (b.allowed, b.reason, b.sub_queue, b.tokens_reserved)
        assert a.retry_after == pytest.approx(b.retry_after, abs=1e-6)
        assert a.at == pytest.approx(b.at, abs=1e-9)
        if a.allowed and used is not None:
            mem.settle(limits, a, used)
            red.settle(limits, b, used)
    sa, sb = mem.stats(limits), red.stats(limits)
    assert (sa.waiting, sa.granted) == (sb.waiting, sb.granted)
    for f in ("rate_per_second", "requests_per_minute", "tokens_per_minute", "tokens_available"):
        x, y = getattr(sa, f), getattr(sb, f)
        assert (x is None and y is None) or x == pytest.approx(y, rel=1e-9, abs=1e-6), f


@pytest.mark.redis
@pytest.mark.parametrize("limits", [
    QueueLimits("c1", max_messages_per_second=20, burst_size=3, sub_queues=(("paid", 3.0), ("free", 1.0))),
    QueueLimits("c2", max_requests_per_minute=600, max_tokens_per_minute=30000,
                sub_queues=(("a", 1.0), ("b", 2.0), ("c", 5.0))),
    QueueLimits("c3", max_tokens_per_minute=6000, sub_queues=(("paid", 3.0), ("free", 1.0))),
], ids=["rate", "rpm+tokens", "tokens"])
def test_redis_matches_memory_under_contention(limits, key_prefix):
    """Many workers on every sub-queue, the same event-driven run on both backends."""
    from .test_limiter import simulate
    runs = []
    for kind in ("memory", "redis"):
        clock = FakeClock()
        lim = make_limiter(kind, clock, key_prefix)
        pending = [(s, 100 + 50 * i) for i, (s, _) in enumerate(limits.sub_queues)] * 3 + [(None, 50)]
        out = simulate(lim, clock, limits, pending, grants=300, usage=lambda k: 40 + (k * 13) % 120)
        runs.append(([(round(t, 6), s) for t, s, _ in out], simulate.calls))
    assert runs[0] == runs[1]
