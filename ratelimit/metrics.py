"""Prometheus figures for the queues' limiters, read from `Limiter.stats()` at scrape time.

    from prometheus_client import REGISTRY
    from agentflow.ratelimit.metrics import LimiterCollector
    REGISTRY.register(LimiterCollector(limiter, lambda: current_queue_limits()))

Metrics (label `queue`, plus `sub_queue` where it applies):

    agentflow_queue_rate_per_second        grants per second over the last 10 s
    agentflow_queue_requests_per_minute    grants over the last minute
    agentflow_queue_tokens_per_minute      settled tokens over the last minute
    agentflow_queue_tokens_available       token bucket level (queues with a token limit)
    agentflow_queue_limit_per_second       configured binding rate (messages/s or rpm/60)
    agentflow_queue_limit_tokens_per_minute configured max_tokens_per_minute
    agentflow_queue_waiting                waiting tasks per sub-queue
    agentflow_queue_granted_total          grants per sub-queue since the state was created
    agentflow_queue_in_flight              steps holding a max_concurrency slot now
    agentflow_queue_limit_concurrency      configured max_concurrency
"""

from __future__ import annotations

import logging
from typing import Callable, Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import REGISTRY, Collector, CollectorRegistry

from .base import LimiterUnavailable, QueueLimits, QueueStats

log = logging.getLogger(__name__)


def metric_families(items: Iterable[tuple[QueueLimits, QueueStats]]) -> list:
    """Metric families for (limits, stats) pairs; usable without a limiter (e.g. cached stats)."""
    rate = GaugeMetricFamily("agentflow_queue_rate_per_second",
                             "Grants per second over the last 10 s", labels=["queue"])
    rpm = GaugeMetricFamily("agentflow_queue_requests_per_minute",
                            "Grants over the last minute", labels=["queue"])
    tpm = GaugeMetricFamily("agentflow_queue_tokens_per_minute",
                            "Tokens really used (settled) over the last minute", labels=["queue"])
    avail = GaugeMetricFamily("agentflow_queue_tokens_available",
                              "Token bucket level now", labels=["queue"])
    lim_rate = GaugeMetricFamily("agentflow_queue_limit_per_second",
                                 "Configured binding message rate per second", labels=["queue"])
    lim_tpm = GaugeMetricFamily("agentflow_queue_limit_tokens_per_minute",
                                "Configured max_tokens_per_minute", labels=["queue"])
    waiting = GaugeMetricFamily("agentflow_queue_waiting", "Tasks waiting for a grant",
                                labels=["queue", "sub_queue"])
    granted = CounterMetricFamily("agentflow_queue_granted", "Grants since the state was created",
                                  labels=["queue", "sub_queue"])
    in_flight = GaugeMetricFamily("agentflow_queue_in_flight", "Steps holding a max_concurrency slot now",
                                  labels=["queue"])
    lim_cc = GaugeMetricFamily("agentflow_queue_limit_concurrency", "Configured max_concurrency",
                               labels=["queue"])
    for limits, st in items:
        q = [limits.id]
        rate.add_metric(q, st.rate_per_second)
        rpm.add_metric(q, st.requests_per_minute)
        tpm.add_metric(q, st.tokens_per_minute)
        if st.tokens_available is not None:
            avail.add_metric(q, st.tokens_available)
        if limits.rate_per_second:
            lim_rate.add_metric(q, limits.rate_per_second)
        if limits.max_tokens_per_minute:
            lim_tpm.add_metric(q, float(limits.max_tokens_per_minute))
        for sub, n in st.waiting.items():
            waiting.add_metric([limits.id, sub], float(n))
        for sub, n in st.granted.items():
            granted.add_metric([limits.id, sub], float(n))
        if limits.max_concurrency:
            in_flight.add_metric(q, float(st.in_flight))
            lim_cc.add_metric(q, float(limits.max_concurrency))
    return [rate, rpm, tpm, avail, lim_rate, lim_tpm, waiting, granted, in_flight, lim_cc]


class LimiterCollector(Collector):
    """Reads `limiter.stats()` for each queue `queues()` returns, at every scrape.

    A queue whose stats cannot be read (Redis down) is skipped and logged, so /metrics
    still answers."""

    def __init__(self, limiter, queues: Callable[[], Iterable[QueueLimits]]):
        self.limiter = limiter
        self.queues = queues

    def collect(self):
        items = []
        for limits in self.queues():
            try:
                items.append((limits, self.limiter.stats(limits)))
            except LimiterUnavailable as e:
                log.warning("queue %s: no limiter stats: %s", limits.id, e)
        yield from metric_families(items)

    def describe(self):
        return []   # no fixed set: do not call collect() at registration


def register(limiter, queues: Callable[[], Iterable[QueueLimits]],
             registry: CollectorRegistry = REGISTRY) -> LimiterCollector:
    """Register a LimiterCollector on `registry` (the default one unless given)."""
    collector = LimiterCollector(limiter, queues)
    registry.register(collector)
    return collector
