"""Reusable sources (contract section 1, "Source"), per tenant.

A source holds names of environment variables, never their values; the stored JSON is
exactly the validated model, so what comes back can be sent back unchanged.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from .db import session_scope
from .models import SourceRow, utcnow


class SourceExists(Exception):
    pass


def source_json(source: BaseModel) -> dict[str, Any]:
    return source.model_dump(mode="json", by_alias=True, exclude_unset=True)


class SourceStore:
    def __init__(self, factory: sessionmaker[Session]):
        self.factory = factory

    def list(self, tenant_id: str, *, limit: int = 100, after: str | None = None,
             kind: str | None = None) -> tuple[list[dict[str, Any]], str | None]:
        """Ordered by id; `after` is the id returned as the previous page's cursor."""
        with session_scope(self.factory) as s:
            q = select(SourceRow).where(SourceRow.tenant_id == tenant_id)
            if kind:
                q = q.where(SourceRow.kind == kind)
            if after:
                q = q.where(SourceRow.id > after)
            rows = list(s.scalars(q.order_by(SourceRow.id).limit(limit + 1)))
            page = rows[:limit]
            return [r.spec for r in page], (page[-1].id if len(rows) > limit else None)

    def get(self, tenant_id: str, source_id: str) -> dict[str, Any] | None:
        with session_scope(self.factory) as s:
            row = s.get(SourceRow, (tenant_id, source_id))
            return row.spec if row is not None else None

    def create(self, tenant_id: str, source: BaseModel) -> dict[str, Any]:
        """Insert a new source; SourceExists when the id is taken."""
        data = source_json(source)
        try:
            with session_scope(self.factory) as s:
                if s.get(SourceRow, (tenant_id, data["id"])) is not None:
                    raise SourceExists(data["id"])
                now = utcnow()
                s.add(SourceRow(tenant_id=tenant_id, id=data["id"], kind=data["kind"], spec=data,
                                created_at=now, updated_at=now))
        except IntegrityError:
            raise SourceExists(data["id"]) from None
        return data

    def put(self, tenant_id: str, source: BaseModel) -> tuple[dict[str, Any], bool]:
        """Create or replace; returns (source, created)."""
        data = source_json(source)
        with session_scope(self.factory) as s:
            row = s.get(SourceRow, (tenant_id, data["id"]), with_for_update=True)
            now = utcnow()
            if row is None:
                s.add(SourceRow(tenant_id=tenant_id, id=data["id"], kind=data["kind"], spec=data,
                                created_at=now, updated_at=now))
                return data, True
            row.kind, row.spec, row.updated_at = data["kind"], data, now
            return data, False

    def delete(self, tenant_id: str, source_id: str) -> bool:
        with session_scope(self.factory) as s:
            row = s.get(SourceRow, (tenant_id, source_id))
            if row is None:
                return False
            s.delete(row)
            return True
