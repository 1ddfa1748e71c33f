"""max_concurrency: slots in flight per queue (and per concurrency key), both backends."""

from __future__ import annotations

import time

from agentflow.ratelimit import QueueLimits
from agentflow.ratelimit.base import CONCURRENCY_POLL, holding


def test_cap_holds_until_settle(limiter):
    q = QueueLimits("cc", max_concurrency=2)
    a, b = limiter.try_acquire(q), limiter.try_acquire(q)
    assert a.allowed and b.allowed and a.slot and b.slot and a.slot != b.slot
    full = limiter.try_acquire(q, waiter="w1")
    assert not full.allowed and full.reason == "concurrency"
    assert 0 < full.retry_after <= CONCURRENCY_POLL + 1e-9
    assert limiter.stats(q).in_flight == 2
    limiter.settle(q, a, 0)
    assert limiter.stats(q).in_flight == 1
    c = limiter.try_acquire(q, waiter="w1")
    assert c.allowed
    limiter.settle(q, a, 0)  # settling twice gives back nothing more
    assert not limiter.try_acquire(q).allowed


def test_keys_are_capped_independently(limiter):
    q = QueueLimits("cck", max_concurrency=1)
    a = limiter.try_acquire(q, concurrency_key="acme")
    b = limiter.try_acquire(q, concurrency_key="globex")
    assert a.allowed and b.allowed
    assert not limiter.try_acquire(q, concurrency_key="acme").allowed
    assert not limiter.try_acquire(q, concurrency_key="globex").allowed
    stats = limiter.stats(q)
    assert stats.in_flight == 2 and stats.in_flight_by_key == {"acme": 1, "globex": 1}
    limiter.settle(q, a, 0)
    assert limiter.try_acquire(q, concurrency_key="acme").allowed
    assert not limiter.try_acquire(q, concurrency_key="globex").allowed


def test_a_lapsed_lease_frees_the_slot(make, clock):
    limiter = make(slot_ttl=5.0)
    q = QueueLimits("ccl", max_concurrency=1)
    held = limiter.try_acquire(q)
    assert held.allowed
    clock.advance(4.0)
    assert not limiter.try_acquire(q).allowed
    limiter.renew(q, held)  # the running step renews: 5 s more from now
    clock.advance(4.0)
    assert not limiter.try_acquire(q).allowed
    clock.advance(1.5)  # its holder died: no renewal, the lease lapses
    assert limiter.stats(q).in_flight == 0
    taken = limiter.try_acquire(q)
    assert taken.allowed
    limiter.renew(q, held)  # a late renewal of the dead holder takes nothing back
    assert limiter.stats(q).in_flight == 1


def test_concurrency_and_rate_together_deny_without_charging(make, clock):
    limiter = make()
    q = QueueLimits("ccr", max_messages_per_second=1, max_tokens_per_minute=600, max_concurrency=1)
    a = limiter.try_acquire(q, tokens=300)
    assert a.allowed
    clock.advance(2.0)
    d = limiter.try_acquire(q, tokens=10)
    assert not d.allowed and d.reason == "concurrency"
    assert abs(limiter.stats(q).tokens_available - 300) < 1e-6  # the denial reserved nothing
    limiter.settle(q, a, 300)
    b = limiter.try_acquire(q, tokens=10)
    assert b.allowed  # the rate allowed it: the denial did not use the grant
    d2 = limiter.try_acquire(q, tokens=10)
    assert not d2.allowed  # slot and rate both taken


def test_holding_renews_while_the_step_runs(make, clock):
    limiter = make(slot_ttl=0.3)
    q = QueueLimits("cch", max_concurrency=1)
    d = limiter.try_acquire(q)
    renewed = []
    original = limiter.renew
    limiter.renew = lambda limits, decision: (renewed.append(1), original(limits, decision))
    with holding(limiter, q, d):
        time.sleep(0.35)
    assert len(renewed) >= 2
    n = len(renewed)
    time.sleep(0.25)
    assert len(renewed) == n  # stopped with the block
