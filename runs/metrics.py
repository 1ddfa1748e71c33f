"""Prometheus counters of the runs and steps this process executed.

Embedded mode: the API process runs them all; distributed mode: each worker process
counts its own (GET /metrics/summary reads the database for cross-process figures).
They live here, with the executors that count them, and `GET /metrics` (api/metrics.py)
serves them from the default registry, once per process.
"""

from __future__ import annotations

from datetime import datetime

from prometheus_client import Counter, Histogram

_SECONDS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900)
STEPS = Counter("agentflow_steps_total", "Steps that ended in this process, by node type and status.",
                ["node_type", "status"])
STEP_SECONDS = Histogram("agentflow_step_duration_seconds", "Step duration, by node type.", ["node_type"],
                         buckets=_SECONDS)
TOKENS = Counter("agentflow_tokens_total", "Tokens reported by providers, by node type.", ["node_type"])
COST = Counter("agentflow_cost_usd_total", "Estimated provider cost in USD, by node type.", ["node_type"])
RUNS_ENDED = Counter("agentflow_runs_ended_total", "Runs that ended in this process, by status.", ["status"])
RUN_SECONDS = Histogram("agentflow_run_duration_seconds", "Run duration (start to end), by status.",
                        ["status"], buckets=_SECONDS)


def observe_step(step: dict) -> None:
    node_type = str(step.get("node_type") or "unknown")
    STEPS.labels(node_type, str(step.get("status") or "unknown")).inc()
    if step.get("duration_ms") is not None:
        STEP_SECONDS.labels(node_type).observe(float(step["duration_ms"]) / 1000)
    if step.get("tokens"):
        TOKENS.labels(node_type).inc(int(step["tokens"]))
    if step.get("cost"):
        COST.labels(node_type).inc(float(step["cost"]))


def observe_run(record: dict) -> None:
    """Count a run that ended (the record of RunStore.get)."""
    status = str(record.get("status") or "unknown")
    RUNS_ENDED.labels(status).inc()
    try:
        started = datetime.fromisoformat(record["started_at"])
        finished = datetime.fromisoformat(record["finished_at"])
    except (KeyError, TypeError, ValueError):
        return
    RUN_SECONDS.labels(status).observe(max(0.0, (finished - started).total_seconds()))
