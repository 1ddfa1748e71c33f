"""Schedules: start a workflow on a cron expression or every N seconds, per tenant.

The API writes them (with next_run_at set one period ahead, or None when disabled);
celery beat (`agentflow.workers.schedule_task`) fires the due ones.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from croniter import croniter
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from .db import session_scope
from .models import Schedule, utcnow
from .workflows import aware


def cron_is_valid(expr: str) -> bool:
    try:
        return bool(croniter.is_valid(expr))
    except Exception:
        return False


def next_fire(cron: str | None, interval_seconds: float | None, after: datetime) -> datetime | None:
    """The first firing strictly after `after` (UTC)."""
    after = aware(after)
    if cron:
        return aware(croniter(cron, after).get_next(datetime))
    if interval_seconds:
        return after + timedelta(seconds=float(interval_seconds))
    return None


def schedule_dict(row: Schedule) -> dict[str, Any]:
    return {"id": row.id, "workflow_id": row.workflow_id, "cron": row.cron,
            "interval_seconds": row.interval_seconds, "input": row.input, "enabled": row.enabled,
            "last_run_at": aware(row.last_run_at), "next_run_at": aware(row.next_run_at),
            "created_at": aware(row.created_at), "updated_at": aware(row.updated_at)}


class ScheduleStore:
    def __init__(self, factory: sessionmaker[Session]):
        self.factory = factory

    def create(self, tenant_id: str, *, workflow_id: str, cron: str | None, interval_seconds: float | None,
               run_input: dict[str, Any], enabled: bool = True) -> dict[str, Any]:
        now = utcnow()
        row = Schedule(id=str(uuid.uuid4()), tenant_id=tenant_id, workflow_id=workflow_id, cron=cron,
                       interval_seconds=interval_seconds, input=run_input, enabled=enabled,
                       next_run_at=next_fire(cron, interval_seconds, now) if enabled else None,
                       created_at=now, updated_at=now)
        with session_scope(self.factory) as s:
            s.add(row)
            s.flush()
            return schedule_dict(row)

    def get(self, tenant_id: str, schedule_id: str) -> dict[str, Any] | None:
        with session_scope(self.factory) as s:
            row = s.get(Schedule, schedule_id)
            if row is None or row.tenant_id != tenant_id:
                return None
            return schedule_dict(row)

    def list(self, tenant_id: str, *, workflow_id: str | None = None, limit: int = 100,
             after: str | None = None) -> tuple[list[dict[str, Any]], str | None]:
        """Ordered by id; `after` is the previous page's cursor (a schedule id)."""
        with session_scope(self.factory) as s:
            q = select(Schedule).where(Schedule.tenant_id == tenant_id)
            if workflow_id is not None:
                q = q.where(Schedule.workflow_id == workflow_id)
            if after:
                q = q.where(Schedule.id > after)
            rows = list(s.scalars(q.order_by(Schedule.id).limit(limit + 1)))
            page = rows[:limit]
            return [schedule_dict(r) for r in page], (page[-1].id if len(rows) > limit else None)

    def replace(self, tenant_id: str, schedule_id: str, *, workflow_id: str, cron: str | None,
                interval_seconds: float | None, run_input: dict[str, Any], enabled: bool) -> dict[str, Any] | None:
        with session_scope(self.factory) as s:
            row = s.get(Schedule, schedule_id, with_for_update=True)
            if row is None or row.tenant_id != tenant_id:
                return None
            now = utcnow()
            timing_changed = (row.cron, row.interval_seconds) != (cron, interval_seconds)
            row.workflow_id, row.cron, row.interval_seconds = workflow_id, cron, interval_seconds
            row.input, row.updated_at = run_input, now
            if not enabled:
                row.next_run_at = None
            elif timing_changed or not row.enabled or row.next_run_at is None:
                row.next_run_at = next_fire(cron, interval_seconds, now)
            row.enabled = enabled
            s.flush()
            return schedule_dict(row)

    def delete(self, tenant_id: str, schedule_id: str) -> bool:
        with session_scope(self.factory) as s:
            row = s.get(Schedule, schedule_id)
            if row is None or row.tenant_id != tenant_id:
                return False
            s.delete(row)
            return True
