"""GET /audit: the tenant's audit log for admins, newest first, paginated."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel

from ...store.audit import AuditStore
from ..body import JSONRoute
from ..deps import ServicesDep, TenantDep
from ..errors import ApiError
from ..pagination import Cursor, Limit, decode, encode
from ..schemas import ErrorResponse

router = APIRouter(tags=["audit"], route_class=JSONRoute)


class AuditRecord(BaseModel):
    id: int
    at: datetime
    subject: str
    role: str | None = None
    action: str
    target_type: str
    target_id: str | None = None
    ip: str | None = None
    detail: dict[str, Any] | None = None


class AuditPage(BaseModel):
    items: list[AuditRecord]
    next_cursor: str | None = None


def audit_store(svc) -> AuditStore:
    store = svc.extra.get("audit")
    if store is None:
        store = svc.extra["audit"] = AuditStore(svc.factory)
    return store


def _before(cursor: str | None) -> int | None:
    if not cursor:
        return None
    (key,) = decode(cursor, 1)
    if not isinstance(key, int) or isinstance(key, bool) or key < 1:
        raise ApiError(422, "invalid cursor: pass the next_cursor of a previous page unchanged",
                       [{"path": "query.cursor", "message": "invalid cursor"}])
    return key


Text = Annotated[str | None, Query(max_length=256)]


@router.get("/audit", response_model=AuditPage, summary="Audit log of the caller's tenant, newest first (admin)",
            responses={401: {"model": ErrorResponse}, 403: {"model": ErrorResponse},
                       422: {"model": ErrorResponse}})
def list_audit(svc: ServicesDep, tenant: TenantDep, limit: Limit = 50, cursor: Cursor = None,
               action: Text = None, target_type: Text = None, target_id: Text = None,
               subject: Text = None) -> dict[str, Any]:
    items, next_id = audit_store(svc).list(tenant, limit=limit, before=_before(cursor), action=action,
                                           target_type=target_type, target_id=target_id, subject=subject)
    return {"items": items, "next_cursor": encode(next_id) if next_id else None}
