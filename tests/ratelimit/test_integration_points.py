"""What the rest of the engine plugs into: the factory, Prometheus figures, the interface."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from agentflow.ratelimit import (Limiter, LimiterUnavailable, MemoryLimiter, QueueLimits,
                                 limiter_from_env, memory_limiter)
from agentflow.ratelimit.metrics import LimiterCollector, metric_families, register

from .conftest import FakeClock


def test_factory_picks_memory_without_redis_url():
    a = limiter_from_env({})
    assert isinstance(a, MemoryLimiter) and a is limiter_from_env({}) is memory_limiter()


@pytest.mark.redis
def test_factory_picks_redis_with_redis_url(redis_url):
    from agentflow.ratelimit.redis import RedisLimiter
    env = {"REDIS_URL": redis_url, "AGENTFLOW_RATELIMIT_PREFIX": "af:rl:test:factory"}
    lim = limiter_from_env(env)
    assert isinstance(lim, RedisLimiter) and lim.key_prefix == "af:rl:test:factory"
    assert limiter_from_env(env) is lim


def test_both_backends_implement_the_interface():
    from agentflow.ratelimit.redis import RedisLimiter
    for cls in (MemoryLimiter, RedisLimiter):
        for name in ("try_acquire", "acquire", "settle", "stats", "forget"):
            assert callable(getattr(cls, name)), (cls, name)
    lim: Limiter = MemoryLimiter()   # type-checks as the Protocol
    assert lim.try_acquire(QueueLimits("x")).allowed   # no limits configured: always granted


def test_prometheus_collector_exports_stats():
    clock = FakeClock()
    lim = MemoryLimiter(clock=clock)
    q = QueueLimits("llm", max_messages_per_second=2, max_tokens_per_minute=6000,
                    sub_queues=(("paid", 3.0), ("free", 1.0)))
    d = lim.try_acquire(q, "paid", tokens=100)
    lim.settle(q, d, 40)
    assert not lim.try_acquire(q, "free", tokens=100, waiter="t1").allowed
    reg = CollectorRegistry()
    register(lim, lambda: [q], registry=reg)
    text = generate_latest(reg).decode()
    assert 'agentflow_queue_waiting{queue="llm",sub_queue="free"} 1.0' in text
    assert 'agentflow_queue_granted_total{queue="llm",sub_queue="paid"} 1.0' in text
    assert 'agentflow_queue_limit_per_second{queue="llm"} 2.0' in text
    assert 'agentflow_queue_limit_tokens_per_minute{queue="llm"} 6000.0' in text
    for name in ("rate_per_second", "requests_per_minute", "tokens_per_minute", "tokens_available"):
        assert f"agentflow_queue_{name}{{" in text
    assert reg.get_sample_value("agentflow_queue_tokens_available", {"queue": "llm"}) == pytest.approx(5960)


def test_collector_skips_a_queue_whose_backend_is_down(caplog):
    class Down:
        def stats(self, limits):
            raise LimiterUnavailable("no Redis")

    q = QueueLimits("gone", max_messages_per_second=1)
    reg = CollectorRegistry()
    reg.register(LimiterCollector(Down(), lambda: [q]))
    assert 'queue="gone"' not in generate_latest(reg).decode()
    assert "no Redis" in caplog.text


def test_metric_families_from_cached_stats():
    from agentflow.ratelimit import QueueStats
    q = QueueLimits("q", max_requests_per_minute=60)
    fams = metric_families([(q, QueueStats("q", 1.5, 0.0, {"default": 2}, {"default": 9}, 60.0))])
    names = {f.name for f in fams}
    assert "agentflow_queue_waiting" in names and "agentflow_queue_granted" in names
    rate = next(f for f in fams if f.name == "agentflow_queue_limit_per_second")
    assert rate.samples[0].value == 1.0


def test_the_engine_charges_a_step_to_its_queue_as_plain_data():
    """graph/step.py hands the limiter a QueueCharge (graph/ imports no ratelimit/): the
    step's call is granted and settled on the tenant's budget, and a call that can never
    fit fails the step with the limiter's own words, not retryable."""
    from agentflow.graph.runtime import RunContext
    from agentflow.graph.spec import WorkflowSpec
    from agentflow.graph.step import QueueCharge, StepFailed, queue_plan, run_step

    spec = WorkflowSpec.model_validate({
        "id": "wf", "name": "wf", "start_node": "a",
        "nodes": [{"id": "a", "type": "input", "queue": "llm", "sub_queue": "paid"}], "edges": [],
        "queues": [{"id": "llm", "max_messages_per_second": 5, "max_tokens_per_minute": 1000,
                    "sub_queues": [{"id": "paid", "weight": 3}, {"id": "free"}]}]})

    class Impl:  # the NodeImpl interface run_step uses
        node = spec.nodes[0]
        tokens = 100
        keyed = False  # starts no child runs: needs no step key

        def estimate_tokens(self, state):
            return self.tokens

        def __call__(self, state, ctx):
            return {"tokens_used": 40}

    charge, sub = queue_plan(spec, Impl.node, {}, "acme")
    assert isinstance(charge, QueueCharge) and (charge.id, sub) == ("acme/wf:llm", "paid")
    limits = QueueLimits.of(charge)
    assert (limits.id, limits.max_messages_per_second, limits.sub_queues) == ("acme/wf:llm", 5, (("paid", 3.0), ("free", 1.0)))

    lim = MemoryLimiter(clock=FakeClock())
    ctx = RunContext(limiter=lim, tenant_id="acme", max_limit_wait=1)
    assert run_step(spec, Impl(), {}, ctx) == {"tokens_used": 40}
    stats = lim.stats(limits)
    assert stats.granted["paid"] == 1 and stats.tokens_available == pytest.approx(960)

    big = Impl()
    big.tokens = 5000
    with pytest.raises(StepFailed) as failed:
        run_step(spec, big, {}, ctx)
    assert str(failed.value).startswith("node 'a' failed: queue 'acme/wf:llm': a call estimated at 5000 tokens")
    assert not failed.value.retryable
