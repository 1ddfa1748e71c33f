"""The limiter's rules, on a fake clock, against both backends (same cases, same answers)."""

from __future__ import annotations

import heapq
import math

import pytest

from agentflow.ratelimit import DEFAULT_SUB_QUEUE, LimitError, LimiterUnavailable, QueueLimits, RateLimitExceeded
from agentflow.ratelimit.loadtest import worst_window


def simulate(lim, clock, limits, pending, *, grants=None, until=None, usage=None):
    """Event-driven workers on the fake clock. `pending` is a list of (sub_queue, tokens):
    one task each, replaced by a new one when granted. Runs until `grants` grants or the
    clock passes `until`. Returns [(time, sub_queue, decision)]."""
    out = []
    heap = [(clock.t, i, 0) for i in range(len(pending))]
    heapq.heapify(heap)
    gen = [0] * len(pending)
    calls = 0
    while heap:
        t, i, g = heapq.heappop(heap)
        if until is not None and t > until:
            break
        clock.t = max(clock.t, t)
        sub, tokens = pending[i]
        d = lim.try_acquire(limits, sub, tokens, waiter=f"w{i}.{gen[i]}")
        calls += 1
        if d.allowed:
            out.append((clock.t, d.sub_queue, d))
            if usage is not None:
                lim.settle(limits, d, usage(len(out)))
            gen[i] += 1
            heapq.heappush(heap, (clock.t, i, gen[i]))
            if grants is not None and len(out) >= grants:
                break
        else:
            assert d.retry_after > 0, d
            heapq.heappush(heap, (clock.t + d.retry_after, i, gen[i]))
    simulate.calls = calls
    return out


# ------------------------------------------------------------------ messages per second

def test_burst_then_paced(limiter, clock):
    q = QueueLimits("burst", max_messages_per_second=10, burst_size=5)
    got = [limiter.try_acquire(q) for _ in range(6)]
    assert [d.allowed for d in got] == [True] * 5 + [False]
    assert got[5].reason == "rate"
    assert got[5].retry_after == pytest.approx(0.1, abs=1e-6)    # burst 5 = 4 intervals ahead
    clock.advance(0.1)
    assert limiter.try_acquire(q).allowed
    assert not limiter.try_acquire(q).allowed
    clock.advance(0.1)
    assert limiter.try_acquire(q).allowed


def test_default_burst_is_one(limiter, clock):
    q = QueueLimits("one", max_messages_per_second=4)
    assert limiter.try_acquire(q).allowed
    d = limiter.try_acquire(q)
    assert not d.allowed and d.retry_after == pytest.approx(0.25, abs=1e-6)
    clock.advance(0.25)
    assert limiter.try_acquire(q).allowed


def test_the_slack_is_a_late_grants_credit_never_an_early_grant(limiter, clock):
    """Burst 1: n grants from idle span at least n - 1 intervals (the rate measured from the
    first call is never above the limit), whoever asks how often; a grant up to half an
    interval late keeps the schedule, a later one restarts it."""
    q = QueueLimits("slack", max_messages_per_second=4)
    times = []
    while len(times) < 48:
        d = limiter.try_acquire(q)
        if d.allowed:
            times.append(clock.t)
        clock.advance(0.01)                           # a waiter always there
    assert times[-1] - times[0] >= 47 * 0.25 - 1e-6
    assert times[1] - times[0] == pytest.approx(0.25, abs=0.011)
    clock.advance(10)                                 # idle
    assert limiter.try_acquire(q).allowed
    clock.advance(0.25 + 0.1)                         # 100 ms late: keeps its place
    assert limiter.try_acquire(q).allowed
    clock.advance(0.15)                               # the next is due at +0.5, not +0.6
    assert limiter.try_acquire(q).allowed
    clock.advance(0.25 + 0.2)                         # 200 ms late: the schedule restarts
    assert limiter.try_acquire(q).allowed
    d = limiter.try_acquire(q)
    assert not d.allowed and d.retry_after == pytest.approx(0.25, abs=1e-6)


def test_steady_rate_and_bursts_hold(limiter, clock):
    q = QueueLimits("steady", max_messages_per_second=20, burst_size=4)
    out = simulate(limiter, clock, q, [(None, 0)] * 4, until=clock.t + 30)
    times = [t for t, _, _ in out]
    assert worst_window(times, 1.0) <= 20 + 4
    steady = [t for t in times if t > times[0] + 1]
    assert (len(steady) - 1) / (steady[-1] - steady[0]) == pytest.approx(20, rel=0.002)
    assert max(sum(1 for t in times if t == u) for u in times) <= 4   # no more than burst at once


def test_a_late_worker_keeps_its_place(limiter, clock):
    """Coming back up to half an interval after the advised time loses nothing (burst 1)."""
    q = QueueLimits("late", max_messages_per_second=10)
    end, n = clock.t + 10, 0
    while clock.t < end:
        d = limiter.try_acquire(q)
        if d.allowed:
            n += 1
        else:
            clock.advance(d.retry_after + 0.03)      # 30 ms late every time
    assert n >= 100                                  # a strict GCRA would give 10 / 0.13 = 77


# ------------------------------------------------------------------ requests per minute

def test_requests_per_minute(limiter, clock):
    q = QueueLimits("rpm", max_requests_per_minute=120, burst_size=2)
    out = simulate(limiter, clock, q, [(None, 0)] * 3, until=clock.t + 60)
    assert 118 <= len(out) <= 122
    assert all(d.reason == "ok" for _, _, d in out)
    assert worst_window([t for t, _, _ in out], 1.0) <= 2 + 2


def test_all_limits_must_pass_and_a_denial_consumes_nothing(limiter, clock):
    q = QueueLimits("both", max_messages_per_second=10, max_requests_per_minute=30,
                    max_tokens_per_minute=600)
    assert limiter.try_acquire(q, tokens=100).allowed          # window 600 -> 500 left
    clock.advance(0.5)
    d = limiter.try_acquire(q, tokens=100)
    assert not d.allowed and d.reason == "rpm"                 # messages/s would pass
    assert d.retry_after == pytest.approx(2.0 - 0.5, abs=1e-6)  # T=2 s
    st = limiter.stats(q)
    assert st.tokens_available == pytest.approx(500, abs=1e-3)  # the denial reserved nothing
    clock.advance(d.retry_after)
    assert limiter.try_acquire(q, tokens=100).allowed
    # the messages/s limit was not touched by the denial either: the next one is rpm-bound
    d = limiter.try_acquire(q, tokens=1)
    assert not d.allowed and d.reason == "rpm"


def test_combined_rate_is_the_tighter_one(limiter, clock):
    q = QueueLimits("comb", max_messages_per_second=30, max_requests_per_minute=600, burst_size=3)
    out = simulate(limiter, clock, q, [(None, 0)] * 4, until=clock.t + 20)
    times = [t for t, _, _ in out]
    steady = [t for t in times if t > times[0] + 1]
    assert (len(steady) - 1) / (steady[-1] - steady[0]) == pytest.approx(10, rel=0.005)
    assert worst_window(times, 1.0) <= 10 + 3


# ------------------------------------------------------------------ tokens per minute

def test_tokens_reserved_then_settled(limiter, clock):
    q = QueueLimits("tok", max_tokens_per_minute=600)              # a sliding minute
    d1 = limiter.try_acquire(q, tokens=400)
    assert d1.allowed and d1.tokens_reserved == 400 and d1.reservation
    clock.advance(5)
    d2 = limiter.try_acquire(q, tokens=300)
    assert not d2.allowed and d2.reason == "tokens"
    assert d2.retry_after == pytest.approx(56.0, abs=1e-6)          # until d1 leaves the window (61 s)
    limiter.settle(q, d1, 150)                                      # 250 back
    d3 = limiter.try_acquire(q, tokens=300)
    assert d3.allowed
    limiter.settle(q, d1, 150)                                      # idempotent
    assert limiter.stats(q).tokens_available == pytest.approx(150, abs=1e-3)
    limiter.settle(q, d3, 500)                                      # used more: debt
    assert limiter.stats(q).tokens_available == pytest.approx(-50, abs=1e-3)
    d4 = limiter.try_acquire(q, tokens=100)
    assert not d4.allowed and d4.retry_after == pytest.approx(56.0, abs=1e-6)
    # per-minute figures are counted over the last 55-60 s and scaled to a minute
    assert 650 <= limiter.stats(q).tokens_per_minute <= 650 * 60 / 55 + 1e-6
    clock.advance(56)                                               # d1 (150) left the window
    assert limiter.stats(q).tokens_available == pytest.approx(100, abs=1e-3)
    assert limiter.try_acquire(q, tokens=100).allowed
    assert not limiter.try_acquire(q, tokens=1).allowed
    clock.advance(5)                                                # d3 (500) left too
    assert limiter.stats(q).tokens_available == pytest.approx(500, abs=1e-3)


def test_settle_of_a_denial_or_without_token_limit_is_a_no_op(limiter, clock):
    q = QueueLimits("tok2", max_tokens_per_minute=100)
    d = limiter.try_acquire(q, tokens=100)
    denied = limiter.try_acquire(q, tokens=100)
    assert d.allowed and not denied.allowed
    limiter.settle(q, denied, 0)
    assert limiter.stats(q).tokens_available == pytest.approx(0, abs=1e-3)
    plain = QueueLimits("plain", max_messages_per_second=5)
    dp = limiter.try_acquire(plain, tokens=50)
    assert dp.allowed and dp.tokens_reserved == 0 and dp.reservation is None
    limiter.settle(plain, dp, 50)
    with pytest.raises(ValueError):
        limiter.settle(q, d, -1)


def test_a_call_bigger_than_the_budget_fails_clearly(limiter):
    q = QueueLimits("small", max_tokens_per_minute=1000)
    with pytest.raises(RateLimitExceeded) as e:
        limiter.try_acquire(q, tokens=1001)
    assert "1001" in str(e.value) and "max_tokens_per_minute=1000" in str(e.value)
    assert not e.value.retryable and isinstance(e.value, LimitError)
    with pytest.raises(RateLimitExceeded):
        limiter.acquire(q, tokens=5000, timeout=1)
    assert limiter.try_acquire(q, tokens=1000).allowed              # exactly the budget is fine
    with pytest.raises(ValueError):
        limiter.try_acquire(q, tokens=-1)


def test_token_budget_follows_reported_usage(limiter, clock):
    """Estimates of 200 settled with the real usage (50-199): every sliding minute holds at
    most the budget, and each whole minute gets nearly all of it (the estimate's excess is
    given back at settle)."""
    q = QueueLimits("tpm", max_tokens_per_minute=6000)
    out = simulate(limiter, clock, q, [(None, 200)] * 4, until=clock.t + 400,
                   usage=lambda k: 50 + (k * 37) % 150)
    used = [(t, 50 + ((i + 1) * 37) % 150) for i, (t, _, _) in enumerate(out)]
    times = [t for t, _ in used]
    worst = max(sum(u for t, u in used if s <= t < s + 60) for s in times)
    assert worst <= 6000
    t0 = times[0]
    for minute in range(6):
        got = sum(u for t, u in used if t0 + 60 * minute <= t < t0 + 60 * (minute + 1))
        assert got >= 0.95 * 6000, (minute, got)


# ------------------------------------------------------------------ weighted sub-queues

SUBS = (("paid", 3.0), ("free", 1.0))


def test_saturated_sub_queues_share_by_weight(limiter, clock):
    q = QueueLimits("wfq", max_messages_per_second=20, burst_size=2, sub_queues=SUBS)
    out = simulate(limiter, clock, q, [("paid", 0), ("free", 0)] * 2, grants=800)
    subs = [s for _, s, _ in out[8:]]
    assert subs.count("paid") / len(subs) == pytest.approx(0.75, rel=0.02)
    assert subs.count("free") / len(subs) == pytest.approx(0.25, rel=0.05)
    times = [t for t, _, _ in out]
    assert (len(times) - 9) / (times[-1] - times[8]) == pytest.approx(20, rel=0.01)
    assert simulate.calls < 4 * len(out)          # countdowns spread the waiters out


def test_idle_share_is_lent_and_nobody_starves(limiter, clock):
    q = QueueLimits("lend", max_messages_per_second=10, sub_queues=(("paid", 100.0), ("free", 1.0)))
    only_free = simulate(limiter, clock, q, [("free", 0)] * 2, until=clock.t + 10)
    assert len(only_free) >= 99                    # paid idle: free gets the whole rate
    clock.advance(30)                              # free's waiters expire
    both = simulate(limiter, clock, q, [("paid", 0), ("free", 0)], grants=1010)
    free = sum(1 for _, s, _ in both if s == "free")
    assert 8 <= free <= 12                         # 1 in 101, not starved, not more


def test_a_returning_sub_queue_gets_no_catch_up_burst(limiter, clock):
    q = QueueLimits("catch", max_messages_per_second=10, sub_queues=(("a", 1.0), ("b", 1.0)))
    simulate(limiter, clock, q, [("a", 0)], grants=200)   # b idle for 20 s
    out = simulate(limiter, clock, q, [("a", 0), ("b", 0)], grants=40)
    b = [s for _, s, _ in out].count("b")
    assert 18 <= b <= 22                                    # half, not all 40


def test_unknown_sub_queue_goes_to_default(limiter):
    q = QueueLimits("dflt", max_messages_per_second=10, burst_size=2, sub_queues=SUBS)
    d = limiter.try_acquire(q, "nope")
    assert d.allowed and d.sub_queue == DEFAULT_SUB_QUEUE
    assert limiter.try_acquire(q, None).sub_queue == DEFAULT_SUB_QUEUE
    assert limiter.stats(q).granted == {"paid": 0, "free": 0, DEFAULT_SUB_QUEUE: 2}


# ------------------------------------------------------------------ waiters and stats

def test_waiters_are_counted_expire_and_can_be_withdrawn(make, clock):
    limiter = make(waiter_ttl=5.0)
    q = QueueLimits("wait", max_messages_per_second=1, sub_queues=SUBS)
    assert limiter.try_acquire(q, "paid", waiter="t0").allowed
    for i in range(3):
        assert not limiter.try_acquire(q, "paid", waiter=f"p{i}").allowed
    d = limiter.try_acquire(q, "free", waiter="f0")
    assert not d.allowed
    st = limiter.stats(q)
    assert st.waiting == {"paid": 3, "free": 1, DEFAULT_SUB_QUEUE: 0}
    limiter.forget(q, "paid", "p1")
    assert limiter.stats(q).waiting["paid"] == 2
    clock.advance(60)                                  # nobody came back
    assert limiter.stats(q).waiting == {"paid": 0, "free": 0, DEFAULT_SUB_QUEUE: 0}


def test_countdowns_queue_waiters_behind_each_other(limiter, clock):
    q = QueueLimits("line", max_messages_per_second=10)
    assert limiter.try_acquire(q, waiter="a").allowed
    r = [limiter.try_acquire(q, waiter=w).retry_after for w in "bcd"]
    assert r == pytest.approx([0.1, 0.2, 0.3], abs=1e-6)
    # asking again keeps the place in line
    assert limiter.try_acquire(q, waiter="c").retry_after == pytest.approx(0.2, abs=1e-6)


def test_stats_report_rate_tokens_and_grants(limiter, clock):
    q = QueueLimits("st", max_messages_per_second=5, max_tokens_per_minute=60000, sub_queues=SUBS)
    simulate(limiter, clock, q, [("paid", 100), ("free", 100)], until=clock.t + 70,
             usage=lambda k: 80)
    st = limiter.stats(q)
    assert st.rate_per_second == pytest.approx(5, rel=0.05)
    assert st.requests_per_minute == pytest.approx(300, rel=0.05)
    assert st.tokens_per_minute == pytest.approx(300 * 80, rel=0.05)
    assert sum(st.granted.values()) == pytest.approx(350, abs=6)
    assert st.granted["paid"] / sum(st.granted.values()) == pytest.approx(0.75, abs=0.02)
    assert 0 <= st.tokens_available <= 60000
    clock.advance(120)
    idle = limiter.stats(q)
    assert idle.rate_per_second == 0 and idle.tokens_per_minute == 0
    assert idle.tokens_available == 60000


def test_stats_of_an_unused_queue(limiter):
    q = QueueLimits("never", max_messages_per_second=1, max_tokens_per_minute=10)
    st = limiter.stats(q)
    assert st.rate_per_second == 0 and st.granted == {DEFAULT_SUB_QUEUE: 0}
    assert st.tokens_available == 10


# ------------------------------------------------------------------ acquire (blocking helper)

def test_acquire_waits_the_advised_time(limiter, clock):
    q = QueueLimits("acq", max_messages_per_second=2)
    t0 = clock.t
    for _ in range(5):
        assert limiter.acquire(q).allowed
    assert clock.t - t0 == pytest.approx(2.0, abs=1e-6)    # 4 intervals: the slack is no early grant


def test_acquire_gives_up_at_the_timeout(limiter, clock):
    q = QueueLimits("acq2", max_tokens_per_minute=60)
    assert limiter.acquire(q, tokens=60).allowed
    d = limiter.acquire(q, tokens=30, timeout=10)
    assert not d.allowed and d.reason == "tokens"
    assert limiter.stats(q).waiting == {DEFAULT_SUB_QUEUE: 0}      # registration withdrawn
    assert limiter.acquire(q, tokens=30, timeout=62).allowed       # the first grant left the window


# ------------------------------------------------------------------ limits

def test_queue_limits_from_spec_and_validation():
    """The engine charges a node to plain data (graph/step.py QueueCharge); the limiter
    takes it as its QueueLimits."""
    from agentflow.graph.spec import Queue
    from agentflow.graph.step import QueueCharge
    spec = Queue.model_validate({"id": "llm", "max_messages_per_second": 5, "burst_size": 3,
                                 "max_tokens_per_minute": 1000,
                                 "sub_queues": [{"id": "paid", "weight": 3}, {"id": "free"}]})
    q = QueueLimits.of(QueueCharge.of(spec, namespace="t1"))
    assert type(q) is QueueLimits and QueueLimits.of(q) is q
    assert q.id == "t1:llm" and q.burst == 3 and q.sub_queues == (("paid", 3.0), ("free", 1.0))
    assert q.rate_per_second == 5 and q.message_interval == 0.2 and q.request_interval == 0
    assert QueueLimits("x", max_requests_per_minute=30).rate_per_second == 0.5
    assert QueueLimits("x", max_tokens_per_minute=5).rate_per_second is None
    assert hash(q) == hash(QueueLimits.of(QueueCharge.of(spec, namespace="t1")))
    for bad in ({"max_messages_per_second": 0}, {"burst_size": 0},
                {"sub_queues": (("a", 1.0), ("a", 2.0))}, {"sub_queues": (("a", 0.0),)}):
        with pytest.raises(ValueError):
            QueueLimits("bad", **bad)


# ------------------------------------------------------------------ Redis specifics

@pytest.mark.redis
def test_restart_starts_known_queues_cold(redis_url, key_prefix, clock):
    from agentflow.ratelimit.redis import RedisLimiter
    q = QueueLimits("cold", max_messages_per_second=10, burst_size=5, max_tokens_per_minute=600)
    lim = RedisLimiter(redis_url, key_prefix=key_prefix, clock=clock)
    assert sum(lim.try_acquire(q, tokens=10).allowed for _ in range(6)) == 5   # fresh: full burst
    clock.advance(10)
    assert lim.clear() > 0                                 # Redis lost everything
    d = lim.try_acquire(q)
    assert not d.allowed and d.retry_after == pytest.approx(0.1, abs=1e-6)   # one interval
    clock.advance(0.1)
    assert lim.try_acquire(q).allowed
    d = lim.try_acquire(q, tokens=10)
    assert not d.allowed and d.reason in ("rate", "tokens")
    clock.advance(1.0)
    assert not lim.try_acquire(q, tokens=100).allowed      # the last minute's 600 taken as spent
    clock.advance(10)                                      # a sixth of it left the window
    assert lim.try_acquire(q, tokens=100).allowed
    assert not lim.try_acquire(q, tokens=100).allowed
    # a process that never saw the queue gets the normal fresh start
    lim.clear()
    other = RedisLimiter(redis_url, key_prefix=key_prefix, clock=clock)
    assert sum(other.try_acquire(q).allowed for _ in range(6)) == 5


@pytest.mark.redis
def test_unreachable_redis_raises_and_grants_nothing(key_prefix):
    from agentflow.ratelimit.redis import RedisLimiter
    lim = RedisLimiter("redis://127.0.0.1:1/0", key_prefix=key_prefix, socket_timeout=0.5)
    q = QueueLimits("down", max_messages_per_second=1)
    with pytest.raises(LimiterUnavailable) as e:
        lim.try_acquire(q)
    assert "127.0.0.1:1" in str(e.value) and e.value.retryable
    for call in (lambda: lim.stats(q), lambda: lim.forget(q, None, "w"), lambda: lim.clear()):
        with pytest.raises(LimiterUnavailable):
            call()


@pytest.mark.redis
def test_works_with_a_client_object_and_decoded_responses(redis_url, key_prefix, clock):
    import redis

    from agentflow.ratelimit.redis import RedisLimiter
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    lim = RedisLimiter(client, key_prefix=key_prefix, clock=clock)
    q = QueueLimits("dec", max_messages_per_second=1, sub_queues=SUBS)
    assert lim.try_acquire(q, "paid").allowed
    d = lim.try_acquire(q, "free", waiter="x")
    assert not d.allowed and d.reason == "rate" and d.retry_after == pytest.approx(1.0)
    assert lim.stats(q).waiting["free"] == 1


@pytest.mark.redis
def test_script_is_reloaded_after_script_flush(redis_url, key_prefix):
    import redis

    from agentflow.ratelimit.redis import RedisLimiter
    lim = RedisLimiter(redis_url, key_prefix=key_prefix)
    q = QueueLimits("flush", max_messages_per_second=1000, burst_size=10)
    assert lim.try_acquire(q).allowed
    redis.Redis.from_url(redis_url).script_flush()
    assert lim.try_acquire(q).allowed


@pytest.mark.redis
def test_real_clock_decisions_carry_server_time(redis_url, key_prefix):
    import time

    from agentflow.ratelimit.redis import RedisLimiter
    lim = RedisLimiter(redis_url, key_prefix=key_prefix)
    q = QueueLimits("now", max_messages_per_second=1)
    d = lim.try_acquire(q)
    assert d.allowed and abs(d.at - time.time()) < 5
    d2 = lim.try_acquire(q)
    assert not d2.allowed and 0.9 < d2.retry_after <= 1.0 and d2.at >= d.at
    assert math.isclose(d2.retry_after, 1.0 - (d2.at - d.at), abs_tol=2e-6)
