"""Schedules: run a saved workflow on a cron expression or every N seconds (celery beat fires them)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response

from ..body import JSONRoute
from ..deps import ServicesDep, TenantDep
from ..errors import ApiError, not_found
from ..pagination import Cursor, Limit, decode_str, encode
from ..schemas import ErrorResponse, ScheduleIn, SchedulePage, ScheduleRecord

router = APIRouter(tags=["schedules"], route_class=JSONRoute)
ERRORS = {404: {"model": ErrorResponse}, 422: {"model": ErrorResponse}}


def _fields(svc, tenant: str, body: ScheduleIn) -> dict[str, Any]:
    if not svc.workflows.exists(tenant, body.workflow_id):
        raise ApiError(422, f"workflow {body.workflow_id!r} not found",
                       [{"path": "workflow_id", "message": "unknown workflow"}])
    return {"workflow_id": body.workflow_id, "cron": body.cron, "interval_seconds": body.interval_seconds,
            "run_input": body.input.model_dump(), "enabled": body.enabled}


@router.get("/schedules", response_model=SchedulePage, responses=ERRORS)
def list_schedules(svc: ServicesDep, tenant: TenantDep, limit: Limit = 100, cursor: Cursor = None,
                   workflow_id: Annotated[str | None, Query(max_length=128)] = None) -> dict[str, Any]:
    items, next_id = svc.schedules.list(tenant, workflow_id=workflow_id, limit=limit, after=decode_str(cursor))
    return {"items": items, "next_cursor": encode(next_id) if next_id else None}


@router.post("/schedules", status_code=201, response_model=ScheduleRecord, responses=ERRORS)
def create_schedule(body: ScheduleIn, svc: ServicesDep, tenant: TenantDep) -> dict[str, Any]:
    return svc.schedules.create(tenant, **_fields(svc, tenant, body))


@router.get("/schedules/{schedule_id}", response_model=ScheduleRecord, responses=ERRORS)
def get_schedule(schedule_id: str, svc: ServicesDep, tenant: TenantDep) -> dict[str, Any]:
    record = svc.schedules.get(tenant, schedule_id)
    if record is None:
        raise not_found("schedule", schedule_id)
    return record


@router.put("/schedules/{schedule_id}", response_model=ScheduleRecord, responses=ERRORS)
def replace_schedule(schedule_id: str, body: ScheduleIn, svc: ServicesDep, tenant: TenantDep) -> dict[str, Any]:
    if svc.schedules.get(tenant, schedule_id) is None:
        raise not_found("schedule", schedule_id)
    record = svc.schedules.replace(tenant, schedule_id, **_fields(svc, tenant, body))
    if record is None:  # deleted in between
        raise not_found("schedule", schedule_id)
    return record


@router.delete("/schedules/{schedule_id}", status_code=204, response_class=Response, responses=ERRORS)
def delete_schedule(schedule_id: str, svc: ServicesDep, tenant: TenantDep) -> Response:
    if not svc.schedules.delete(tenant, schedule_id):
        raise not_found("schedule", schedule_id)
    return Response(status_code=204)
