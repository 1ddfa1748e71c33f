"""Run trace replay: every step with its input, delta and the state after it; re-run from a step."""

from __future__ import annotations

import logging
from typing import Any

from fastapi.responses import JSONResponse
from fastapi import APIRouter

from ...runs.rerun import RerunRefused, create_rerun
from ...store.trace import TraceStore
from .. import metrics
from ..body import JSONRoute
from ..deps import ServicesDep, TenantDep
from ..errors import ApiError, not_found, scrub
from ..schemas import ErrorResponse, RerunQueued, RerunRequest, RunTrace

log = logging.getLogger("agentflow.api")
router = APIRouter(tags=["runs"], route_class=JSONRoute)

ERRORS = {404: {"model": ErrorResponse}, 422: {"model": ErrorResponse}}


@router.get("/runs/{run_id}/trace", response_model=RunTrace, responses=ERRORS,
            summary="Every step in order: what it read, what it wrote, and the state after it")
def run_trace(run_id: str, svc: ServicesDep, tenant: TenantDep) -> dict[str, Any]:
    trace = TraceStore(svc.factory).trace(run_id, tenant)
    if trace is None:
        raise not_found("run", run_id)
    trace["children"] = svc.runs.children(run_id)  # each child's own trace is /runs/{child}/trace
    return trace


@router.post("/runs/{run_id}/rerun", status_code=202, response_model=RerunQueued, responses={
    **ERRORS, 409: {"model": ErrorResponse, "description": "the run has not ended"},
    503: {"model": ErrorResponse, "description": "the run could not be queued"}},
    summary="Re-run from a node with an edited state, reusing the steps before it")
def rerun(run_id: str, body: RerunRequest, svc: ServicesDep, tenant: TenantDep) -> JSONResponse:
    try:
        new_id = create_rerun(svc.runs, TraceStore(svc.factory), run_id, tenant, body.from_node,
                              body.state, {"stream": True} if body.stream else None)
    except RerunRefused as exc:
        errors = [{"path": exc.path, "message": exc.message}] if exc.path else []
        raise ApiError(exc.status, exc.message, errors) from None
    if new_id is None:
        raise not_found("run", run_id)
    try:
        svc.dispatcher.submit(new_id)
    except Exception as exc:
        reason = scrub(str(exc) or type(exc).__name__)[:200]
        log.error("re-run %s could not be queued: %s", new_id, reason)
        svc.runs.finish(new_id, "failed", error=f"could not be queued: {reason}")
        raise ApiError(503, f"run could not be queued: {reason}", headers={"Retry-After": "5"}) from None
    metrics.RUNS_SUBMITTED.labels(svc.mode, "rerun").inc()
    return JSONResponse({"run_id": new_id, "status": "queued", "parent_run_id": run_id}, status_code=202,
                        headers={"Location": f"/runs/{new_id}"})
