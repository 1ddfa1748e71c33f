"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from typing import Any

import anyio
from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from sqlalchemy import text

from .. import metrics
from ..body import JSONRoute
from ..deps import Services, ServicesDep, TenantDep
from ..errors import db_reason, scrub
from ..schemas import Health, NotReady, Readiness

router = APIRouter(tags=["health"], route_class=JSONRoute)
CHECK_TIMEOUT = 5.0


@router.get("/health", response_model=Health, summary="Liveness")
async def health(svc: ServicesDep) -> dict[str, str]:
    return {"status": "ok", "mode": svc.mode}


def _check_database(svc: Services) -> str:
    try:
        with svc.factory() as session:
            session.execute(text("SELECT 1"))
    except Exception as exc:
        return f"database unavailable: {db_reason(exc)}"
    return "ok"


def _check_broker(svc: Services) -> str:
    try:
        ping = getattr(svc.dispatcher, "ping_broker", None)
        if ping is not None:
            ping()
        else:
            from ...redisconn import redis_client

            redis_client(svc.settings.redis, socket_timeout=CHECK_TIMEOUT,
                         socket_connect_timeout=CHECK_TIMEOUT).ping()
    except Exception as exc:
        return f"broker unavailable: {scrub(str(exc) or type(exc).__name__)[:200]}"
    return "ok"


def _check_workers(svc: Services) -> str:
    ping = getattr(svc.dispatcher, "ping_workers", None)
    if ping is None:
        return "cannot ping workers: the dispatcher has no ping_workers()"
    try:
        answer = ping()
    except Exception as exc:
        return f"cannot ping workers: {scrub(str(exc) or type(exc).__name__)[:200]}"
    if not answer:
        return "no Celery worker answered the ping"
    return "ok"


@router.get("/health/ready", response_model=Readiness, summary="Readiness: database, broker, workers",
            responses={503: {"model": NotReady, "description": "a dependency is down"}})
async def ready(svc: ServicesDep) -> Any:
    checks = {"database": _check_database}
    if svc.settings.distributed:
        checks.update(broker=_check_broker, workers=_check_workers)
    results: dict[str, str] = {}
    for name, check in checks.items():
        with anyio.move_on_after(CHECK_TIMEOUT + 1) as scope:
            results[name] = await anyio.to_thread.run_sync(check, svc, abandon_on_cancel=True)
        if scope.cancelled_caught:
            results[name] = f"{name} check timed out after {CHECK_TIMEOUT:.0f}s"
    failing = [(name, msg) for name, msg in results.items() if msg != "ok"]
    if failing:
        detail = "; ".join(msg for _, msg in failing)
        return JSONResponse({"ready": False, "checks": results, "detail": detail,
                             "errors": [{"path": name, "message": msg} for name, msg in failing]},
                            status_code=503)
    return {"ready": True, "checks": results}


@router.get("/metrics", summary="Prometheus metrics", response_class=Response,
            responses={200: {"content": {"text/plain": {}}}})
async def prometheus_metrics(svc: ServicesDep, tenant: TenantDep) -> Response:
    from .queues import metrics_text

    depths = getattr(svc.dispatcher, "queue_depths", None)  # distributed mode: the broker's queues
    body, content_type = await anyio.to_thread.run_sync(metrics.render, svc.factory, depths)
    # the limiter's per-queue gauges of the caller's tenant (routes/queues.py)
    body += await anyio.to_thread.run_sync(metrics_text, svc, tenant)
    return Response(body, media_type=content_type)
