"""Prometheus metrics of the API process (`GET /metrics`).

Metric objects live on the default registry, once per process (several apps in one
process, as in tests, share them). Runs by status are read from the database at scrape
time, so they are right whichever process (API thread or Celery worker) ran the run.
The counters of the runs and steps this process executed are runs/metrics.py's.
"""

from __future__ import annotations

import logging
from typing import Callable

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram, generate_latest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from ..runs import metrics as _run_metrics  # noqa: F401 - registers the run and step counters
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
BROKER_QUEUE = Gauge("agentflow_broker_queue_messages",
                     "Messages waiting in each Celery queue (distributed mode), read at scrape time: "
                     "what a HorizontalPodAutoscaler on queue depth reads.", ["queue"])

STATUSES = RUN_STATUSES

def observe_request(method: str, route: str, status: int, seconds: float) -> None:
    HTTP_REQUESTS.labels(method, route, str(status)).inc()
    HTTP_LATENCY.labels(method, route).observe(seconds)


def run_counts(factory: sessionmaker[Session]) -> dict[str, int]:
    with session_scope(factory) as s:
        rows = s.execute(select(Run.status, func.count()).group_by(Run.status)).all()
    return {status: int(n) for status, n in rows}


def render(factory: sessionmaker[Session], queue_depths: Callable[[], dict[str, int]] | None = None
           ) -> tuple[bytes, str]:
    """`queue_depths`: the broker's messages waiting per queue (distributed mode)."""
    if queue_depths is not None:
        try:
            for queue, n in queue_depths().items():
                BROKER_QUEUE.labels(queue).set(n)
        except Exception as exc:  # the broker is down: the scrape still answers
            log.warning("metrics: cannot read the broker's queues: %s", type(exc).__name__)
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
