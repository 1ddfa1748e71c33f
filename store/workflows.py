"""Saved workflows and their versions, per tenant.

A save validates nothing (the caller hands in a parsed `WorkflowSpec`); it writes a new
version unless the spec is identical (same content hash) to the current one. Listing is
keyset-paginated on (updated_at, id), newest first, so pages stay stable while rows move.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Callable

from sqlalchemy import delete, or_, select, tuple_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from ..graph.spec import WorkflowSpec
from .db import session_scope
from .models import CollabUpdate, Workflow, WorkflowVersion, utcnow

ListKey = tuple[datetime, str]  # (updated_at, id) of the last row of a page
_SAVE_ATTEMPTS = 4


def aware(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; everything we store is UTC."""
    if value is None:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)


def _like_pattern(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _summary(wf: Workflow) -> dict[str, Any]:
    return {"id": wf.id, "name": wf.name, "description": wf.description,
            "version": wf.current_version, "updated_at": aware(wf.updated_at)}


def _record(wf: Workflow, ver: WorkflowVersion) -> dict[str, Any]:
    return {"id": wf.id, "name": wf.name, "description": wf.description, "version": ver.version,
            "spec": ver.spec, "spec_hash": ver.spec_hash,
            "created_at": aware(wf.created_at), "updated_at": aware(wf.updated_at)}


def _version(ver: WorkflowVersion, with_spec: bool) -> dict[str, Any]:
    out = {"version": ver.version, "created_at": aware(ver.created_at), "spec_hash": ver.spec_hash,
           "author": ver.author, "editors": ver.editors or []}
    if with_spec:
        out["spec"] = ver.spec
    return out


class WorkflowStore:
    """Repository over `workflows` + `workflow_versions`; every call is scoped to a tenant."""

    def __init__(self, factory: sessionmaker[Session]):
        self.factory = factory

    def save(self, tenant_id: str, spec: WorkflowSpec, *, author: str | None = None,
             editors: list[str] | None = None) -> tuple[dict[str, Any], bool]:
        """Save `spec` as the workflow's next version, saved by `author` after edits by
        `editors` (the shared document's, store/collab.py).

        Returns (record, created): `created` is False when the spec is identical to the
        current version, in which case nothing is written.
        """
        data = spec.to_json()
        digest = spec.content_hash()
        for attempt in range(_SAVE_ATTEMPTS):
            try:
                return self._save_once(tenant_id, spec, data, digest, author, editors)
            except IntegrityError:
                # Another writer took the same version number (or created the workflow)
                # between our read and our insert: read again and take the next one.
                if attempt == _SAVE_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    def _save_once(self, tenant_id: str, spec: WorkflowSpec, data: dict, digest: str, author: str | None,
                   editors: list[str] | None):
        with session_scope(self.factory) as s:
            wf = s.scalars(select(Workflow).where(Workflow.tenant_id == tenant_id, Workflow.id == spec.id)
                           .with_for_update()).first()
            if wf is not None:
                current = s.get(WorkflowVersion, (tenant_id, wf.id, wf.current_version))
                if current is not None and current.spec_hash == digest:
                    return _record(wf, current), False
                number = (s.scalar(select(WorkflowVersion.version)
                                   .where(WorkflowVersion.tenant_id == tenant_id,
                                          WorkflowVersion.workflow_id == wf.id)
                                   .order_by(WorkflowVersion.version.desc()).limit(1)) or 0) + 1
            else:
                number = 1
            now = utcnow()
            ver = WorkflowVersion(tenant_id=tenant_id, workflow_id=spec.id, version=number,
                                  spec=data, spec_hash=digest, created_at=now, author=author,
                                  editors=editors or None)
            s.add(ver)
            if wf is None:
                wf = Workflow(tenant_id=tenant_id, id=spec.id, name=spec.name, description=spec.description,
                              current_version=number, created_at=now, updated_at=now)
                s.add(wf)
            else:
                wf.name, wf.description = spec.name, spec.description
                wf.current_version, wf.updated_at = number, now
            s.flush()
            return _record(wf, ver), True

    def get(self, tenant_id: str, workflow_id: str) -> dict[str, Any] | None:
        """The workflow with its current version's spec, or None."""
        with session_scope(self.factory) as s:
            wf = s.get(Workflow, (tenant_id, workflow_id))
            if wf is None:
                return None
            ver = s.get(WorkflowVersion, (tenant_id, workflow_id, wf.current_version))
            if ver is None:  # should not happen: versions are written with their workflow
                return None
            return _record(wf, ver)

    def exists(self, tenant_id: str, workflow_id: str) -> bool:
        with session_scope(self.factory) as s:
            return s.scalar(select(Workflow.id).where(Workflow.tenant_id == tenant_id,
                                                      Workflow.id == workflow_id)) is not None

    def list(self, tenant_id: str, *, limit: int = 50, after: ListKey | None = None,
             q: str | None = None) -> tuple[list[dict[str, Any]], ListKey | None]:
        """Newest first. `after` is the key returned with the previous page; returns
        (items, key of the next page or None)."""
        with session_scope(self.factory) as s:
            query = select(Workflow).where(Workflow.tenant_id == tenant_id)
            if q:
                pattern = _like_pattern(q)
                query = query.where(or_(Workflow.id.ilike(pattern, escape="\\"),
                                        Workflow.name.ilike(pattern, escape="\\"),
                                        Workflow.description.ilike(pattern, escape="\\")))
            if after is not None:
                at, ident = after
                # a row-value comparison: the database seeks the index to the cursor; the
                # equivalent OR made it walk every row before it (deep pages got slower
                # with every page: bench/scale.py)
                query = query.where(tuple_(Workflow.updated_at, Workflow.id) < tuple_(at, ident))
            rows = list(s.scalars(query.order_by(Workflow.updated_at.desc(), Workflow.id.desc())
                                  .limit(limit + 1)))
            page = rows[:limit]
            next_key = None
            if len(rows) > limit:
                last = page[-1]
                next_key = (aware(last.updated_at), last.id)
            return [_summary(w) for w in page], next_key

    def delete(self, tenant_id: str, workflow_id: str) -> bool:
        """Delete the workflow and every version (runs keep their own copy of the spec)."""
        with session_scope(self.factory) as s:
            wf = s.get(Workflow, (tenant_id, workflow_id))
            if wf is None:
                return False
            s.execute(delete(WorkflowVersion).where(WorkflowVersion.tenant_id == tenant_id,
                                                    WorkflowVersion.workflow_id == workflow_id))
            s.execute(delete(CollabUpdate).where(CollabUpdate.tenant_id == tenant_id,
                                                 CollabUpdate.workflow_id == workflow_id))
            s.delete(wf)
            return True

    def versions(self, tenant_id: str, workflow_id: str) -> list[dict[str, Any]] | None:
        """Every version, newest first; None when the workflow does not exist."""
        with session_scope(self.factory) as s:
            if s.get(Workflow, (tenant_id, workflow_id)) is None:
                return None
            rows = s.scalars(select(WorkflowVersion)
                             .where(WorkflowVersion.tenant_id == tenant_id,
                                    WorkflowVersion.workflow_id == workflow_id)
                             .order_by(WorkflowVersion.version.desc()))
            return [_version(v, with_spec=False) for v in rows]

    def version(self, tenant_id: str, workflow_id: str, number: int) -> dict[str, Any] | None:
        with session_scope(self.factory) as s:
            ver = s.get(WorkflowVersion, (tenant_id, workflow_id, number))
            return _version(ver, with_spec=True) if ver is not None else None

    def resolver(self, tenant_id: str) -> Callable[[str, int | None], dict | None]:
        """graph.validate's Resolver over this tenant's saved workflows: (id, version or None
        for the current one) -> spec, or None when there is no such workflow or version."""
        def resolve(workflow_id: str, version: int | None) -> dict | None:
            if version is None:
                record = self.get(tenant_id, workflow_id)
            elif not isinstance(version, int) or not 1 <= version <= 2_147_483_647:
                return None  # no such version can exist (and the database's integer cannot hold it)
            else:
                record = self.version(tenant_id, workflow_id, version)
            return record["spec"] if record is not None else None

        return resolve
