"""The audit log: who did what to which object, and when, per tenant (table `audit_log`).

Written by the API's audit middleware after every successful write and every run
start/cancel; read by admins through `GET /audit`, newest first, keyset-paginated by id.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ..graph.secrets import redact
from .db import session_scope
from .models import AuditEntry, utcnow


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)


def _clip(value: str | None, size: int) -> str | None:
    return value[:size] if isinstance(value, str) else value


def audit_row(tenant_id: str, *, subject: str, role: str | None, action: str, target_type: str,
              target_id: str | None = None, ip: str | None = None, detail: dict | None = None) -> dict[str, Any]:
    """The audit_log columns of one entry: clipped to the column sizes, secrets redacted."""
    return {"tenant_id": tenant_id, "subject": _clip(subject, 256) or "-", "role": _clip(role, 32),
            "action": _clip(action, 64), "target_type": _clip(target_type, 32),
            "target_id": _clip(redact(target_id), 256), "ip": _clip(ip, 64),
            "detail": redact(detail) if detail else None, "at": utcnow()}


def audit_dict(row: AuditEntry) -> dict[str, Any]:
    return {"id": row.id, "at": _aware(row.at), "subject": row.subject, "role": row.role,
            "action": row.action, "target_type": row.target_type, "target_id": row.target_id,
            "ip": row.ip, "detail": row.detail}


class AuditStore:
    def __init__(self, factory: sessionmaker[Session]):
        self.factory = factory

    def record(self, tenant_id: str, *, subject: str, role: str | None, action: str, target_type: str,
               target_id: str | None = None, ip: str | None = None, detail: dict | None = None) -> int:
        return self.insert(audit_row(tenant_id, subject=subject, role=role, action=action,
                                     target_type=target_type, target_id=target_id, ip=ip, detail=detail))

    def insert(self, row: dict[str, Any]) -> int:
        # Core: one row per audited request, on the answer's critical path
        table = AuditEntry.__table__
        with self.factory.kw["bind"].begin() as conn:
            return conn.execute(table.insert().values(**row).returning(table.c.id)).scalar_one()

    def amend_status(self, tenant_id: str, action: str, target_id: str, status: int, reason: str) -> None:
        """A request audited before its answer was known (a run start is logged in the run's
        own statement) that then failed: the entry says how it ended."""
        table = AuditEntry.__table__
        with self.factory.kw["bind"].begin() as conn:
            for row_id, detail in conn.execute(select(table.c.id, table.c.detail).where(
                    table.c.tenant_id == tenant_id, table.c.action == action, table.c.target_id == target_id)):
                conn.execute(table.update().where(table.c.id == row_id).values(
                    detail={**(detail or {}), "status": status, "error": redact(reason)[:500]}))

    def list(self, tenant_id: str, *, limit: int = 50, before: int | None = None, action: str | None = None,
             target_type: str | None = None, target_id: str | None = None,
             subject: str | None = None) -> tuple[list[dict[str, Any]], int | None]:
        """Newest first; `before` is the id returned as the previous page's cursor."""
        with session_scope(self.factory) as s:
            q = select(AuditEntry).where(AuditEntry.tenant_id == tenant_id)
            if action:
                q = q.where(AuditEntry.action == action)
            if target_type:
                q = q.where(AuditEntry.target_type == target_type)
            if target_id:
                q = q.where(AuditEntry.target_id == target_id)
            if subject:
                q = q.where(AuditEntry.subject == subject)
            if before is not None:
                q = q.where(AuditEntry.id < before)
            rows = list(s.scalars(q.order_by(AuditEntry.id.desc()).limit(limit + 1)))
            page = rows[:limit]
            return [audit_dict(r) for r in page], (page[-1].id if len(rows) > limit else None)
