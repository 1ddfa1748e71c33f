"""The queues of a tenant's saved workflows (their current versions), for `GET /queues`.

Queues live inside workflow specs; this reads them from the current version of each
workflow, keyset-paginated on (workflow id, queue id) so pages stay stable while
workflows are saved. Specs are stored validated, so each queue parses as a `Queue`.
"""

from __future__ import annotations

from typing import Iterator

from sqlalchemy import and_, select
from sqlalchemy.orm import Session, sessionmaker

from ..graph.spec import Queue
from .db import session_scope
from .models import Workflow, WorkflowVersion

QueueKey = tuple[str, str]  # (workflow id, queue id) of the last item of a page
_BATCH = 100                # workflows read per query while filling a page


def _queues_of(spec: dict | None) -> list[Queue]:
    items = []
    for raw in (spec or {}).get("queues") or []:
        try:
            items.append(Queue.model_validate(raw))
        except ValueError:  # a spec stored before a stricter schema: skip what no longer parses
            continue
    return sorted(items, key=lambda q: q.id)


class QueueStore:
    """Read-only view of the queues declared by a tenant's current workflow versions."""

    def __init__(self, factory: sessionmaker[Session]):
        self.factory = factory

    def _current_specs(self, tenant_id: str, after_workflow: str | None = None,
                       workflow_id: str | None = None) -> Iterator[tuple[str, dict]]:
        """(workflow id, current spec) of the tenant's workflows in id order, from
        `after_workflow` (included), read in batches."""
        cursor, op_inclusive = after_workflow, True
        while True:
            with session_scope(self.factory) as s:
                query = (select(Workflow.id, WorkflowVersion.spec)
                         .join(WorkflowVersion, and_(WorkflowVersion.tenant_id == Workflow.tenant_id,
                                                     WorkflowVersion.workflow_id == Workflow.id,
                                                     WorkflowVersion.version == Workflow.current_version))
                         .where(Workflow.tenant_id == tenant_id))
                if workflow_id is not None:
                    query = query.where(Workflow.id == workflow_id)
                if cursor is not None:
                    query = query.where(Workflow.id >= cursor if op_inclusive else Workflow.id > cursor)
                rows = s.execute(query.order_by(Workflow.id).limit(_BATCH)).all()
            yield from ((w, spec) for w, spec in rows)
            if len(rows) < _BATCH:
                return
            cursor, op_inclusive = rows[-1][0], False

    def list(self, tenant_id: str, *, limit: int = 50, after: QueueKey | None = None,
             workflow_id: str | None = None) -> tuple[list[tuple[str, Queue]], QueueKey | None]:
        """[(workflow id, queue)] ordered by (workflow id, queue id), and the key of the next
        page (None on the last page)."""
        out: list[tuple[str, Queue]] = []
        after_wid, after_qid = after if after else (None, None)
        for wid, spec in self._current_specs(tenant_id, after_wid, workflow_id):
            for queue in _queues_of(spec):
                if wid == after_wid and after_qid is not None and queue.id <= after_qid:
                    continue
                out.append((wid, queue))
                if len(out) > limit:
                    last = out[limit - 1]
                    return out[:limit], (last[0], last[1].id)
        return out, None

    def get(self, tenant_id: str, workflow_id: str, queue_id: str) -> Queue | None:
        with session_scope(self.factory) as s:
            spec = s.scalar(select(WorkflowVersion.spec)
                            .join(Workflow, and_(WorkflowVersion.tenant_id == Workflow.tenant_id,
                                                 WorkflowVersion.workflow_id == Workflow.id,
                                                 WorkflowVersion.version == Workflow.current_version))
                            .where(Workflow.tenant_id == tenant_id, Workflow.id == workflow_id))
        return next((q for q in _queues_of(spec) if q.id == queue_id), None)

    def all(self, tenant_id: str) -> list[tuple[str, Queue]]:
        """Every queue of the tenant's current workflows (for the Prometheus collector)."""
        return [(wid, q) for wid, spec in self._current_specs(tenant_id)
                for q in _queues_of(spec)]
