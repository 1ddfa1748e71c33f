"""Scheduled runs, ticked by every worker's background loop (workers/recovery.py) or by celery beat.

Schedules live in the database, not in beat's own schedule: each tick picks the due
ones (row locks skip those another tick holds), so a schedule created, changed or
disabled through the API takes effect on the next tick without restarting beat.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone

from croniter import croniter
from sqlalchemy import or_, select

from ..store.db import session_scope
from ..store.models import Schedule, Workflow, WorkflowVersion, utcnow
from . import resources
from .app import celery_app

log = logging.getLogger(__name__)


def next_fire(schedule: Schedule, after: datetime) -> datetime:
    if schedule.cron:
        return croniter(schedule.cron, after).get_next(datetime)
    return after + timedelta(seconds=float(schedule.interval_seconds or 60))


def _aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value


@celery_app.task(name="agentflow.schedules.tick", acks_late=False, ignore_result=True)
def tick() -> int:
    store = resources.store()
    fired = []
    now = utcnow()
    with session_scope(store.factory) as s:
        q = (select(Schedule).where(Schedule.enabled.is_(True),
                                    or_(Schedule.next_run_at.is_(None), Schedule.next_run_at <= now))
             .with_for_update(skip_locked=True).limit(100))
        for sched in s.scalars(q):
            if sched.next_run_at is None:  # new schedule: first fire one period from now
                sched.next_run_at = next_fire(sched, now)
                continue
            wf = s.get(Workflow, (sched.tenant_id, sched.workflow_id))
            version = s.get(WorkflowVersion, (sched.tenant_id, sched.workflow_id, wf.current_version)) if wf else None
            sched.last_run_at = now
            sched.next_run_at = next_fire(sched, max(now, _aware(sched.next_run_at) or now))
            if version is None:
                log.warning("schedule %s names missing workflow %s", sched.id, sched.workflow_id)
                continue
            fired.append((version.spec, dict(sched.input or {}), sched.workflow_id, version.version, sched.tenant_id))
    for spec, run_input, wf_id, version, tenant in fired:
        run_id = store.create(spec, run_input, workflow_id=wf_id, workflow_version=version, tenant_id=tenant)
        celery_app.send_task("agentflow.run", args=[run_id], task_id=run_id, queue="runs")
    return len(fired)
