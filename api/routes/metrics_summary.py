"""Dashboard: runs, tokens, cost and latency per workflow, node and source (GET /metrics/summary)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Annotated, Any

from fastapi import APIRouter, Query

from ...store.metrics import MAX_BUCKETS, bucket_count, summary
from ..body import JSONRoute
from ..deps import ServicesDep, TenantDep
from ..errors import ApiError
from ..schemas import ErrorResponse, MetricsSummary

router = APIRouter(tags=["metrics"], route_class=JSONRoute)

DEFAULT_WINDOW = timedelta(hours=24)


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


@router.get("/metrics/summary", response_model=MetricsSummary, responses={422: {"model": ErrorResponse}},
            summary="Runs, tokens, cost and latency of a time window (from the stored runs and steps)")
def metrics_summary(svc: ServicesDep, tenant: TenantDep,
                    start: Annotated[datetime | None, Query(alias="from", description=(
                        "Window start, ISO 8601 (UTC if no offset); default: 24 h before `to`."))] = None,
                    end: Annotated[datetime | None, Query(alias="to", description=(
                        "Window end (exclusive); default: now."))] = None,
                    workflow_id: Annotated[str | None, Query(max_length=128)] = None,
                    bucket_seconds: Annotated[int | None, Query(ge=1, le=366 * 86400, description=(
                        "Time-series bucket; default: chosen for about 100 buckets."))] = None,
                    ) -> dict[str, Any]:
    end = _utc(end) or datetime.now(timezone.utc)
    start = _utc(start) or end - DEFAULT_WINDOW
    if start >= end:
        raise ApiError(422, "`from` must be before `to`", [{"path": "query.from", "message": "not before `to`"}])
    if bucket_seconds is not None and bucket_count(start, end, bucket_seconds) > MAX_BUCKETS:
        raise ApiError(422, f"bucket_seconds gives more than {MAX_BUCKETS} buckets for this window",
                       [{"path": "query.bucket_seconds", "message": "too small for the window"}])
    return summary(svc.factory, tenant, start, end, workflow_id=workflow_id, bucket_seconds=bucket_seconds)
