"""The shared documents of collaborative editing (api/collab.py): Yjs updates per workflow.

A document is the sequence of its updates; applying them in any order gives the same
document (a CRDT), so a write is a plain insert and a load reads them back in id order.
`compact` folds the rows older than the newest version into one, keeping the recent rows
whose subjects say who edited since that version (`editors`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Callable

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, sessionmaker

from .db import session_scope
from .models import CollabUpdate, Workflow, WorkflowVersion, utcnow


class CollabStore:
    def __init__(self, factory: sessionmaker[Session]):
        self.factory = factory

    def load(self, tenant_id: str, workflow_id: str) -> list[bytes]:
        with session_scope(self.factory) as s:
            rows = s.scalars(select(CollabUpdate.data)
                             .where(CollabUpdate.tenant_id == tenant_id, CollabUpdate.workflow_id == workflow_id)
                             .order_by(CollabUpdate.id))
            return [bytes(r) for r in rows]

    def append(self, tenant_id: str, workflow_id: str, data: bytes, subject: str | None) -> None:
        with session_scope(self.factory) as s:
            s.add(CollabUpdate(tenant_id=tenant_id, workflow_id=workflow_id, data=data, subject=subject,
                               created_at=utcnow()))

    def count(self, tenant_id: str, workflow_id: str) -> int:
        with session_scope(self.factory) as s:
            return s.scalar(select(func.count()).select_from(CollabUpdate)
                            .where(CollabUpdate.tenant_id == tenant_id,
                                   CollabUpdate.workflow_id == workflow_id)) or 0

    def compact(self, tenant_id: str, workflow_id: str, merge: Callable[[list[bytes]], bytes],
                keep_after: datetime | None = None) -> int:
        """Replace the rows written up to `keep_after` (all rows when None) by one row of
        their merge. Returns how many rows were folded."""
        with session_scope(self.factory) as s:
            query = (select(CollabUpdate)
                     .where(CollabUpdate.tenant_id == tenant_id, CollabUpdate.workflow_id == workflow_id)
                     .order_by(CollabUpdate.id))
            if keep_after is not None:
                query = query.where(CollabUpdate.created_at <= keep_after)
            rows = list(s.scalars(query))
            if len(rows) < 2:
                return 0
            merged = merge([bytes(r.data) for r in rows])
            s.execute(delete(CollabUpdate).where(CollabUpdate.id.in_([r.id for r in rows])))
            # the merge takes the first row's place (and time): it holds nothing newer
            s.add(CollabUpdate(tenant_id=tenant_id, workflow_id=workflow_id, data=merged, subject=None,
                               created_at=rows[0].created_at))
            return len(rows)

    def editors(self, tenant_id: str, workflow_id: str) -> list[str]:
        """Who sent updates to the document since its current version was saved."""
        with session_scope(self.factory) as s:
            since = s.scalar(select(WorkflowVersion.created_at)
                             .join(Workflow, (Workflow.tenant_id == WorkflowVersion.tenant_id)
                                   & (Workflow.id == WorkflowVersion.workflow_id)
                                   & (Workflow.current_version == WorkflowVersion.version))
                             .where(Workflow.tenant_id == tenant_id, Workflow.id == workflow_id))
            query = (select(CollabUpdate.subject).distinct()
                     .where(CollabUpdate.tenant_id == tenant_id, CollabUpdate.workflow_id == workflow_id,
                            CollabUpdate.subject.is_not(None)))
            if since is not None:
                query = query.where(CollabUpdate.created_at > since)
            return sorted(s.scalars(query))

    def last_version_time(self, tenant_id: str, workflow_id: str) -> datetime | None:
        with session_scope(self.factory) as s:
            return s.scalar(select(func.max(WorkflowVersion.created_at))
                            .where(WorkflowVersion.tenant_id == tenant_id,
                                   WorkflowVersion.workflow_id == workflow_id))

    def delete(self, tenant_id: str, workflow_id: str) -> None:
        with session_scope(self.factory) as s:
            s.execute(delete(CollabUpdate).where(CollabUpdate.tenant_id == tenant_id,
                                                 CollabUpdate.workflow_id == workflow_id))
