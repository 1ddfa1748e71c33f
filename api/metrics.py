"""Prometheus metrics of the API process (`GET /metrics`).

Metric objects live on the default registry, once per process (several apps in one
process, as in tests, share them). Runs by status are read from the database at scrape
time, so they are right whichever process (API thread or Celery worker) ran the run.
"""

from __future__ import annotations

import logging

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram, generate_latest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from ..store.db import session_scope
from ..store.models import Run
from ..store.runs import RUN_STATUSES

log = logging.getLogger("agentflow.api")

HTTP_REQUESTS = Counter("agentflow_http_requests_total", "HTTP requests handled by the API.",
                        ["method", "route", "status"])
HTTP_LATENCY = Histogram("agentflow_http_request_duration_seconds",
                         "Time to the start of the response, per route.", ["method", "route"],
                         buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
RUNS_SUBMITTED = Counter("agentflow_runs_submitted_total", "Runs accepted by this API process.",
                         ["mode", "via"])
RUNS_FINISHED_SEEN = Counter("agentflow_runs_execute_finished_total",
                             "Runs executed synchronously by POST /workflows/execute, by final status.",
                             ["status"])
RUNS_BY_STATUS = Gauge("agentflow_runs", "Runs in the database by status (all tenants), read at scrape time.",
                       ["status"])
DB_UP = Gauge("agentflow_database_up", "1 when the last scrape could read the database.")

STATUSES = RUN_STATUSES

# Runs and steps executed by this process (embedded mode: the API process runs them all;
# distributed mode: each worker process counts its own, and GET /metrics/summary reads
# the database for cross-process figures).
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
    from datetime import datetime

    status = str(record.get("status") or "unknown")
    RUNS_ENDED.labels(status).inc()
    try:
        started = datetime.fromisoformat(record["started_at"])
        finished = datetime.fromisoformat(record["finished_at"])
    except (KeyError, TypeError, ValueError):
        return
    RUN_SECONDS.labels(status).observe(max(0.0, (finished - started).total_seconds()))


def observe_request(method: str, route: str, status: int, seconds: float) -> None:
    HTTP_REQUESTS.labels(method, route, str(status)).inc()
    HTTP_LATENCY.labels(method, route).observe(seconds)


def run_counts(factory: sessionmaker[Session]) -> dict[str, int]:
    with session_scope(factory) as s:
        rows = s.execute(select(Run.status, func.count()).group_by(Run.status)).all()
    return {status: int(n) for status, n in rows}


def render(factory: sessionmaker[Session]) -> tuple[bytes, str]:
    try:
        counts = run_counts(factory)
    except Exception as exc:  # the scrape still answers; the gauge says the DB is down
        log.warning("metrics: cannot count runs: %s", type(exc).__name__)
        DB_UP.set(0)
    else:
        DB_UP.set(1)
        for status in set(STATUSES) | set(counts):
            RUNS_BY_STATUS.labels(status).set(counts.get(status, 0))
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
