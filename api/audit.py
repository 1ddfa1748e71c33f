"""Audit middleware: one `audit_log` row for every successful write and run start/cancel.

It needs no help from the routes: `auth.authorize` leaves the caller (Principal) and the
route's `roles.Rule` in the request's security context; when the answer is a 2xx and the
rule names an action, the row is written (tenant, subject, role, action, target, client
IP, time) and only then is the answer sent. The target id comes from the path or from
the JSON answer (a new run's `run_id`, a new schedule's `id`), as the rule says.
A failure to write the row is logged at ERROR level; the answer still goes out (the
write it describes has already happened).

A route may write its entry itself, in its own statement (`claim`): a run start does,
so the submit path pays one round trip to the database instead of two. The middleware
then lets the answer through untouched.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..store.audit import AuditStore, audit_row
from .auth import client_host, security_context
from .roles import READ_METHODS, Rule

log = logging.getLogger("agentflow.api.audit")


def _target_id(rule: Rule, scope: Scope, body: bytes) -> str | None:
    where = rule.target_id or ""
    kind, _, name = where.partition(":")
    if kind == "path":
        value = (scope.get("path_params") or {}).get(name)
        return None if value is None else str(value)
    if kind == "body":
        try:
            data = json.loads(body) if body else None
        except ValueError:
            return None
        value = data.get(name) if isinstance(data, dict) else None
        return None if value is None else str(value)
    return None


def _audited(ctx: dict[str, Any], status: int) -> bool:
    rule, principal = ctx.get("rule"), ctx.get("principal")
    return (200 <= status < 300 and rule is not None and bool(rule.action)
            and principal is not None and principal.via != "public")


def entry(scope: Scope, ctx: dict[str, Any], status: int, target_id: str | None) -> dict[str, Any]:
    """The audit_log row of this request (`store.audit.audit_row`)."""
    rule: Rule = ctx["rule"]
    principal = ctx["principal"]
    detail = {"method": scope.get("method"), "path": scope.get("path"), "status": status}
    params = scope.get("path_params") or {}
    if params:
        detail["params"] = {k: str(v) for k, v in params.items()}
    return audit_row(principal.tenant, subject=principal.subject, role=principal.role, action=rule.action,
                     target_type=rule.target_type or "route", target_id=target_id, ip=client_host(scope),
                     detail=detail)


def claim(scope: Scope, status: int) -> dict[str, Any] | None:
    """For a route that writes its own entry: the row to write (its target still to fill
    in), or None when this request is not audited. The middleware will not write another."""
    ctx = security_context(scope)
    if not _audited(ctx, status):
        return None
    ctx["audited"] = True
    return entry(scope, ctx, status, None)


class AuditMiddleware:
    def __init__(self, app: ASGIApp, store: AuditStore):
        self.app = app
        self.store = store

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method", "GET").upper() in READ_METHODS:
            await self.app(scope, receive, send)
            return
        ctx = security_context(scope)
        held: Message | None = None
        chunks: list[bytes] = []

        async def audited_send(message: Message) -> None:
            nonlocal held
            if message["type"] == "http.response.start":
                if not ctx.get("audited") and _audited(ctx, int(message["status"])):
                    held = message
                    return
                await send(message)
                return
            if held is None or message["type"] != "http.response.body":
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            body = b"".join(chunks)
            await anyio.to_thread.run_sync(self._record, scope, ctx, int(held["status"]), body)
            start, held = held, None
            await send(start)
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, audited_send)

    def _record(self, scope: Scope, ctx: dict[str, Any], status: int, body: bytes) -> None:
        try:
            self.store.insert(entry(scope, ctx, status, _target_id(ctx["rule"], scope, body)))
        except Exception:
            principal = ctx["principal"]
            log.exception("could not write the audit entry for %s by %s of tenant %s",
                          ctx["rule"].action, principal.subject, principal.tenant)
