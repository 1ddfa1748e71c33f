"""Inbound hooks (signed POSTs that start runs) and outbound webhooks with their deliveries.

Neither table holds a key: `secret_env` names the environment variable that does.
"""

from __future__ import annotations

import secrets
import threading
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from .db import one_statement, session_scope
from .models import Hook, HookReplay, Webhook, WebhookDelivery, utcnow

_claim_lock = threading.Lock()


def _aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value


def hook_dict(h: Hook) -> dict[str, Any]:
    return {"id": h.id, "workflow_id": h.workflow_id, "secret_env": h.secret_env, "enabled": h.enabled,
            "created_at": _aware(h.created_at), "tenant_id": h.tenant_id}


def webhook_dict(w: Any) -> dict[str, Any]:
    """A webhook (ORM object or Core row)."""
    return {"id": w.id, "url": w.url, "events": list(w.events or []), "workflow_id": w.workflow_id,
            "secret_env": w.secret_env, "enabled": w.enabled, "created_at": _aware(w.created_at),
            "tenant_id": w.tenant_id}


def delivery_dict(d: WebhookDelivery) -> dict[str, Any]:
    return {"id": d.id, "webhook_id": d.webhook_id, "run_id": d.run_id, "event": d.event,
            "attempt": d.attempt, "status": d.status, "response_code": d.response_code,
            "error": d.error, "at": _aware(d.at)}


def new_id(prefix: str) -> str:
    """Unguessable: an inbound hook's id is part of its URL."""
    return f"{prefix}_{secrets.token_urlsafe(18)}"

# asked at the end of every run, most often to find there is none: built once
_ENABLED = select(Webhook.__table__).where(Webhook.__table__.c.tenant_id == bindparam("tenant_id"),
                                           Webhook.__table__.c.enabled.is_(True))


class HookStore:
    def __init__(self, factory: sessionmaker[Session]):
        self.factory = factory

    # ---------------------------------------------------------------- inbound hooks

    def create_hook(self, tenant_id: str, workflow_id: str, secret_env: str) -> dict[str, Any]:
        with session_scope(self.factory) as s:
            hook = Hook(id=new_id("hk"), tenant_id=tenant_id, workflow_id=workflow_id, secret_env=secret_env,
                        enabled=True, created_at=utcnow())
            s.add(hook)
            s.flush()
            return hook_dict(hook)

    def hook(self, hook_id: str, tenant_id: str | None = None) -> dict[str, Any] | None:
        """One hook; without `tenant_id` (the signed trigger) whatever tenant owns it."""
        with session_scope(self.factory) as s:
            hook = s.get(Hook, hook_id)
            if hook is None or (tenant_id is not None and hook.tenant_id != tenant_id):
                return None
            return hook_dict(hook)

    def hooks(self, tenant_id: str) -> list[dict[str, Any]]:
        with session_scope(self.factory) as s:
            rows = s.scalars(select(Hook).where(Hook.tenant_id == tenant_id).order_by(Hook.created_at.desc()))
            return [hook_dict(h) for h in rows]

    def delete_hook(self, tenant_id: str, hook_id: str) -> bool:
        with session_scope(self.factory) as s:
            hook = s.get(Hook, hook_id)
            if hook is None or hook.tenant_id != tenant_id:
                return False
            s.delete(hook)
            return True

    # ---------------------------------------------------------------- outbound webhooks

    def create_webhook(self, tenant_id: str, url: str, events: list[str], workflow_id: str | None,
                       secret_env: str | None) -> dict[str, Any]:
        with session_scope(self.factory) as s:
            hook = Webhook(id=new_id("wh"), tenant_id=tenant_id, url=url, events=list(events),
                           workflow_id=workflow_id, secret_env=secret_env, enabled=True, created_at=utcnow())
            s.add(hook)
            s.flush()
            return webhook_dict(hook)

    def webhook(self, webhook_id: str, tenant_id: str | None = None) -> dict[str, Any] | None:
        with session_scope(self.factory) as s:
            hook = s.get(Webhook, webhook_id)
            if hook is None or (tenant_id is not None and hook.tenant_id != tenant_id):
                return None
            return webhook_dict(hook)

    def webhooks(self, tenant_id: str) -> list[dict[str, Any]]:
        with session_scope(self.factory) as s:
            rows = s.scalars(select(Webhook).where(Webhook.tenant_id == tenant_id)
                             .order_by(Webhook.created_at.desc()))
            return [webhook_dict(w) for w in rows]

    def delete_webhook(self, tenant_id: str, webhook_id: str) -> bool:
        with session_scope(self.factory) as s:
            hook = s.get(Webhook, webhook_id)
            if hook is None or hook.tenant_id != tenant_id:
                return False
            s.execute(delete(WebhookDelivery).where(WebhookDelivery.webhook_id == webhook_id))
            s.delete(hook)
            return True

    def matching(self, tenant_id: str, workflow_id: str | None, event: str) -> list[dict[str, Any]]:
        """Enabled webhooks of the tenant that want `event` for this workflow."""
        with one_statement(self.factory.kw["bind"]) as conn:
            rows = conn.execute(_ENABLED, {"tenant_id": tenant_id}).all()
        return [webhook_dict(w) for w in rows
                if event in (w.events or []) and (w.workflow_id is None or w.workflow_id == workflow_id)]

    # ---------------------------------------------------------------- deliveries

    def claim(self, webhook: dict[str, Any], run_id: str, event: str) -> int | None:
        """Record the first (pending) attempt of a delivery; None when one exists already
        (the end of a run can be reported twice, e.g. by a cancel and by its executor)."""
        with _claim_lock, session_scope(self.factory) as s:
            seen = s.scalar(select(WebhookDelivery.id).where(WebhookDelivery.webhook_id == webhook["id"],
                                                             WebhookDelivery.run_id == run_id,
                                                             WebhookDelivery.event == event).limit(1))
            if seen is not None:
                return None
            row = WebhookDelivery(tenant_id=webhook["tenant_id"], webhook_id=webhook["id"], run_id=run_id,
                                  event=event, attempt=1, status="pending", at=utcnow())
            s.add(row)
            s.flush()
            return row.id

    def record_attempt(self, webhook: dict[str, Any], run_id: str, event: str, attempt: int, status: str,
                       response_code: int | None, error: str | None, delivery_id: int | None = None) -> None:
        """Write one attempt: the claimed pending row for the first, a new row for the others."""
        with session_scope(self.factory) as s:
            row = s.get(WebhookDelivery, delivery_id) if delivery_id is not None else None
            if row is None or row.status != "pending":
                row = WebhookDelivery(tenant_id=webhook["tenant_id"], webhook_id=webhook["id"], run_id=run_id,
                                      event=event)
                s.add(row)
            row.attempt, row.status, row.response_code = attempt, status, response_code
            row.error, row.at = (error or None) and error[:2000], utcnow()

    def deliveries(self, webhook_id: str, limit: int = 200) -> list[dict[str, Any]]:
        """Newest first."""
        with session_scope(self.factory) as s:
            rows = s.scalars(select(WebhookDelivery).where(WebhookDelivery.webhook_id == webhook_id)
                             .order_by(WebhookDelivery.id.desc()).limit(limit))
            return [delivery_dict(d) for d in rows]


class HookReplays:
    """The replay guard of inbound triggers in the store (runs.webhooks.ReplayGuard): one
    row per accepted signed request, claimed with INSERT ... ON CONFLICT DO NOTHING on its
    primary key, so of identical requests arriving at once exactly one claims it, on SQLite
    and Postgres alike, and a restart forgets nothing."""

    def __init__(self, factory: sessionmaker[Session], ttl: float):
        self.factory, self.ttl = factory, ttl

    def claim(self, key: str) -> str | None:
        now = utcnow()
        with session_scope(self.factory) as s:
            insert = postgresql.insert if s.get_bind().dialect.name == "postgresql" else sqlite.insert
            s.execute(delete(HookReplay).where(HookReplay.expires_at < now))
            table = HookReplay.__table__
            won = s.execute(insert(table).values(key=key, run_id=None, expires_at=now + timedelta(seconds=self.ttl))
                            .on_conflict_do_nothing(index_elements=["key"]).returning(table.c.key)).first()
            if won is not None:
                return None
            return s.scalar(select(HookReplay.run_id).where(HookReplay.key == key)) or ""

    def settle(self, key: str, run_id: str) -> None:
        with session_scope(self.factory) as s:
            s.execute(update(HookReplay).where(HookReplay.key == key).values(run_id=run_id))

    def release(self, key: str) -> None:
        with session_scope(self.factory) as s:
            s.execute(delete(HookReplay).where(HookReplay.key == key))
