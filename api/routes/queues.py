"""Queues: the limits each saved workflow declares, with the live figures of the limiter.

    GET /queues              every queue of the tenant's current workflows (paginated)
    GET /queues/{id}         one queue; id = "<workflow_id>:<queue_id>"

The figures come from the limiter of the running mode, the one the nodes are charged to:
the Redis limiter in distributed mode (shared with every worker), the process-wide
in-memory limiter of the embedded executor in embedded mode. A run charges its node
calls to `QueueCharge.of(queue, namespace=limit_namespace(<workflow id>, <tenant>))`
(graph/step.py `queue_plan`), so that is what is read here.

`install()` also registers a `ratelimit.metrics.LimiterCollector` on this app's own
Prometheus registry; `GET /metrics` appends it (`metrics_text`) for the caller's tenant:
agentflow_queue_rate_per_second, _requests_per_minute, _tokens_per_minute,
_tokens_available, _limit_per_second, _limit_tokens_per_minute, _waiting{sub_queue},
_granted_total{sub_queue}, _in_flight, _limit_concurrency, label queue="<workflow_id>:<queue_id>" (prefixed "<tenant>/" for
any tenant but the default one, as the limiter keys are).
"""

from __future__ import annotations

import contextvars
import logging
import os
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Path, Query
from pydantic import BaseModel, Field

from ...graph.spec import Queue
from ...graph.step import QueueCharge, limit_namespace
from ...ratelimit.base import LimiterUnavailable, QueueLimits, QueueStats
from ...store.queues import QueueStore
from ..body import JSONRoute
from ..deps import Services, ServicesDep, TenantDep
from ..errors import ApiError, scrub
from ..pagination import Cursor, Limit, _bad, decode, encode
from ..schemas import ErrorResponse

log = logging.getLogger("agentflow.api")
router = APIRouter(tags=["queues"], route_class=JSONRoute)

ERRORS = {404: {"model": ErrorResponse}, 422: {"model": ErrorResponse},
          503: {"model": ErrorResponse, "description": "the limiter's backend (Redis) cannot be reached"}}


# ---------------------------------------------------------------- response models


class SubQueueLimit(BaseModel):
    id: str
    weight: float


class QueueLimitsOut(BaseModel):
    max_messages_per_second: float | None = None
    max_requests_per_minute: float | None = None
    max_tokens_per_minute: int | None = None
    burst_size: int | None = None
    sub_queues: list[SubQueueLimit] = Field(default_factory=list)
    max_concurrency: int | None = None
    concurrency_key: str | None = None


class QueueRecord(BaseModel):
    id: str = Field(description="<workflow_id>:<queue_id>")
    workflow_id: str
    queue_id: str
    limits: QueueLimitsOut
    rate_per_second: float = Field(description="Grants per second over the last ~15 s.")
    requests_per_minute: float = Field(description="Grants over the last minute.")
    tokens_per_minute: float = Field(description="Tokens really used (settled) over the last minute.")
    tokens_available: float | None = Field(None, description="Token bucket level now (token-limited queues).")
    waiting: dict[str, int] = Field(description="Tasks waiting for a grant, per sub-queue.")
    granted: dict[str, int] = Field(description="Grants since the limiter state was created, per sub-queue.")
    in_flight: int = Field(0, description="Steps holding a max_concurrency slot now, fleet-wide.")
    in_flight_by_key: dict[str, int] = Field(default_factory=dict, description=(
        "The same per concurrency key ('' when the queue has no concurrency_key)."))


class QueuePage(BaseModel):
    items: list[QueueRecord]
    next_cursor: str | None = Field(None, description="Pass as ?cursor= for the next page; null on the last page.")


# ---------------------------------------------------------------- the limiter of the running mode


def queue_limiter(svc: Services):
    """The limiter node calls are charged to in this mode (cached on the services)."""
    limiter = svc.extra.get("queue_limiter")
    if limiter is None:
        if svc.settings.distributed:
            from ...ratelimit.factory import redis_limiter

            # the workers' limiter: same Redis and key prefix (AGENTFLOW_RATELIMIT_PREFIX)
            limiter = redis_limiter(svc.settings.redis, os.environ.get("AGENTFLOW_RATELIMIT_PREFIX"))
        else:
            executor = getattr(svc.dispatcher, "executor", None)
            limiter = getattr(executor, "limiter", None)
            if limiter is None:  # embedded runs without a limiter: report the process-wide one
                from ...ratelimit.factory import memory_limiter

                limiter = memory_limiter()
        svc.extra["queue_limiter"] = limiter
    return limiter


def queue_store(svc: Services) -> QueueStore:
    store = svc.extra.get("queue_store")
    if store is None:
        store = svc.extra["queue_store"] = QueueStore(svc.factory)
    return store


def limits_of(tenant: str, workflow_id: str, queue: Queue) -> QueueLimits:
    return QueueLimits.of(QueueCharge.of(queue, namespace=limit_namespace(workflow_id, tenant)))


def _unavailable(exc: Exception) -> ApiError:
    return ApiError(503, f"rate limiter unavailable: {scrub(str(exc) or type(exc).__name__)[:200]}",
                    headers={"Retry-After": "1"})


def record(workflow_id: str, queue: Queue, stats: QueueStats) -> dict[str, Any]:
    return {
        "id": f"{workflow_id}:{queue.id}", "workflow_id": workflow_id, "queue_id": queue.id,
        "limits": {"max_messages_per_second": queue.max_messages_per_second,
                   "max_requests_per_minute": queue.max_requests_per_minute,
                   "max_tokens_per_minute": queue.max_tokens_per_minute,
                   "burst_size": queue.burst_size,
                   "sub_queues": [{"id": s.id, "weight": s.weight} for s in queue.sub_queues],
                   "max_concurrency": queue.max_concurrency, "concurrency_key": queue.concurrency_key},
        "rate_per_second": stats.rate_per_second, "requests_per_minute": stats.requests_per_minute,
        "tokens_per_minute": stats.tokens_per_minute, "tokens_available": stats.tokens_available,
        "waiting": dict(stats.waiting), "granted": dict(stats.granted),
        "in_flight": stats.in_flight, "in_flight_by_key": dict(stats.in_flight_by_key),
    }


def _records(svc: Services, tenant: str, items: list[tuple[str, Queue]]) -> list[dict[str, Any]]:
    limiter = queue_limiter(svc)
    try:
        return [record(wid, q, limiter.stats(limits_of(tenant, wid, q))) for wid, q in items]
    except LimiterUnavailable as exc:
        raise _unavailable(exc) from exc


def _cursor(cursor: str | None) -> tuple[str, str] | None:
    if not cursor:
        return None
    wid, qid = decode(cursor, 2)
    if not (isinstance(wid, str) and isinstance(qid, str) and wid and qid):
        raise _bad()
    return wid, qid


# ---------------------------------------------------------------- routes


@router.get("/queues", response_model=QueuePage, responses={k: v for k, v in ERRORS.items() if k != 404},
            summary="The queues of the tenant's workflows, with live limiter figures")
def list_queues(svc: ServicesDep, tenant: TenantDep, limit: Limit = 50, cursor: Cursor = None,
                workflow_id: Annotated[str | None, Query(max_length=128, description=(
                    "Only the queues of this workflow."))] = None) -> dict[str, Any]:
    items, next_key = queue_store(svc).list(tenant, limit=limit, after=_cursor(cursor), workflow_id=workflow_id)
    return {"items": _records(svc, tenant, items), "next_cursor": encode(*next_key) if next_key else None}


@router.get("/queues/{queue_id}", response_model=QueueRecord, responses=ERRORS,
            summary="One queue (id `<workflow_id>:<queue_id>`) with live limiter figures")
def get_queue(queue_id: Annotated[str, Path(max_length=260, description="<workflow_id>:<queue_id>")],
              svc: ServicesDep, tenant: TenantDep) -> dict[str, Any]:
    wid, sep, qid = queue_id.partition(":")
    queue = queue_store(svc).get(tenant, wid, qid) if sep and wid and qid else None
    if queue is None:
        raise ApiError(404, f"queue {queue_id!r} not found (ids are '<workflow_id>:<queue_id>')")
    return _records(svc, tenant, [(wid, queue)])[0]


# ---------------------------------------------------------------- wiring and Prometheus

_scrape_tenant: contextvars.ContextVar[str | None] = contextvars.ContextVar("agentflow_scrape_tenant",
                                                                            default=None)


def install(app: FastAPI, services: Services) -> None:
    """Add the routes and register the limiter collector on this app's registry."""
    from prometheus_client import CollectorRegistry

    from ...ratelimit import metrics as limiter_metrics

    app.include_router(router)
    registry = CollectorRegistry(auto_describe=False)

    def tenant_queues() -> list[QueueLimits]:
        tenant = _scrape_tenant.get()
        if tenant is None:
            return []
        try:
            return [limits_of(tenant, wid, q) for wid, q in queue_store(services).all(tenant)]
        except Exception as exc:  # the database is down: /metrics still answers without queues
            log.warning("metrics: cannot read the queues: %s", type(exc).__name__)
            return []

    limiter_metrics.register(_LazyLimiter(services), tenant_queues, registry)
    services.extra["queue_metrics"] = registry


class _LazyLimiter:
    """Resolves the limiter at scrape time (the Redis client is made on first use)."""

    def __init__(self, services: Services):
        self.services = services

    def stats(self, limits: QueueLimits) -> QueueStats:
        return queue_limiter(self.services).stats(limits)


def metrics_text(svc: Services, tenant: str) -> bytes:
    """The queue gauges of `tenant`, in the Prometheus text format (b"" before install())."""
    from prometheus_client import generate_latest

    registry = svc.extra.get("queue_metrics")
    if registry is None:
        return b""
    token = _scrape_tenant.set(tenant)
    try:
        return generate_latest(registry)
    finally:
        _scrape_tenant.reset(token)
