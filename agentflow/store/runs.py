"""Run and step records: created by the API, written by whoever executes the run."""

from __future__ import annotations

import functools
import time
import uuid
from datetime import datetime, timezone
from typing import Any, Callable, TypeVar

from sqlalchemy import func, select, tuple_, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from ..graph.secrets import redact
from .db import session_scope
from .models import DEFAULT_TENANT, Run, Step, utcnow

TERMINAL = ("succeeded", "failed", "cancelled")


F = TypeVar("F", bound=Callable[..., Any])


def retry_on_disconnect(fn: F) -> F:
    """Run again on a fresh connection when the database dropped ours mid-call (a restart,
    a failover, a killed backend): the pool pings before handing out the next one. What
    the workers write must survive that: a step whose recorded answer was lost to a dead
    connection would be retried and paid twice (found by tests/chaos, Postgres drop)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        for attempt in range(3):
            try:
                return fn(*args, **kwargs)
            except DBAPIError as exc:
                if not exc.connection_invalidated or attempt == 2:
                    raise
                time.sleep(0.1 * (attempt + 1))
        raise AssertionError("unreachable")

    return wrapper  # type: ignore[return-value]


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:  # SQLite drops the zone; every time we store is UTC
        value = value.replace(tzinfo=timezone.utc)
    return value.isoformat()


def step_dict(step: Step) -> dict[str, Any]:
    return {"run_id": step.run_id, "node_id": step.node_id, "node_type": step.node_type,
            "status": step.status, "attempt": step.attempt, "queue": step.queue, "worker": step.worker,
            "started_at": _iso(step.started_at), "finished_at": _iso(step.finished_at),
            "duration_ms": step.duration_ms, "tokens": step.tokens, "cost": step.cost, "error": step.error}


def run_dict(run: Run, steps: list[Step] | None = None) -> dict[str, Any]:
    out = {"run_id": run.id, "workflow_id": run.workflow_id, "workflow_version": run.workflow_version,
           "status": run.status, "input": run.input, "state": run.state, "error": run.error,
           "tokens_used": run.tokens_used, "cost": run.cost, "attempts": run.attempts,
           "created_at": _iso(run.created_at), "started_at": _iso(run.started_at),
           "finished_at": _iso(run.finished_at),
           "parent_run_id": run.parent_run_id, "rerun_from": run.rerun_from}
    if steps is not None:
        out["steps"] = [step_dict(s) for s in steps]
    return out


class RunStore:
    """Thin repository over runs and steps, safe to share between threads."""

    def __init__(self, factory: sessionmaker[Session]):
        self.factory = factory

    def create(self, spec: dict, run_input: dict, *, workflow_id: str | None = None,
               workflow_version: int | None = None, tenant_id: str = DEFAULT_TENANT,
               run_id: str | None = None, options: dict | None = None,
               parent_run_id: str | None = None, rerun_from: str | None = None) -> str:
        """`options`: execution options such as {"stream": True}; `parent_run_id` and
        `rerun_from`: a re-run of an earlier run from one of its nodes (see store/trace.py)."""
        run_id = run_id or str(uuid.uuid4())
        with session_scope(self.factory) as s:
            s.add(Run(id=run_id, tenant_id=tenant_id, workflow_id=workflow_id,
                      workflow_version=workflow_version, spec=spec, status="queued",
                      input=redact(run_input), options=options or None,
                      parent_run_id=parent_run_id, rerun_from=rerun_from))
        return run_id

    def run_options(self, run_id: str) -> tuple[dict, str | None]:
        """(options, rerun_from) of a run: how its executor must start it."""
        with session_scope(self.factory) as s:
            row = s.execute(select(Run.options, Run.rerun_from).where(Run.id == run_id)).first()
            return (dict(row[0] or {}), row[1]) if row is not None else ({}, None)

    def get(self, run_id: str, tenant_id: str | None = None, with_steps: bool = True) -> dict | None:
        with session_scope(self.factory) as s:
            run = s.get(Run, run_id)
            if run is None or (tenant_id is not None and run.tenant_id != tenant_id):
                return None
            steps = list(s.scalars(select(Step).where(Step.run_id == run_id).order_by(Step.id))) if with_steps else None
            return run_dict(run, steps)

    @retry_on_disconnect
    def spec_of(self, run_id: str) -> tuple[dict, dict, str] | None:
        with session_scope(self.factory) as s:
            run = s.get(Run, run_id)
            return (run.spec, run.input, run.status) if run else None

    @retry_on_disconnect
    def status(self, run_id: str) -> str | None:
        with session_scope(self.factory) as s:
            return s.scalar(select(Run.status).where(Run.id == run_id))

    @retry_on_disconnect
    def mark_running(self, run_id: str) -> bool:
        """queued/running -> running; False when the run already ended or was cancelled."""
        with session_scope(self.factory) as s:
            res = s.execute(update(Run).where(Run.id == run_id, Run.status.in_(("queued", "running")))
                            .values(status="running", started_at=utcnow(), heartbeat_at=utcnow(),
                                    attempts=Run.attempts + 1))
            return res.rowcount == 1

    @retry_on_disconnect
    def finish(self, run_id: str, status: str, state: dict | None = None, error: str | None = None) -> bool:
        state = redact(state) if state is not None else None
        with session_scope(self.factory) as s:
            values: dict[str, Any] = {"status": status, "finished_at": utcnow(), "error": redact(error)}
            if state is not None:
                values["state"] = state
                values["tokens_used"] = int(state.get("tokens_used") or 0)
                values["cost"] = float(state.get("cost") or 0.0)
            res = s.execute(update(Run).where(Run.id == run_id, Run.status.notin_(TERMINAL)).values(**values))
            return res.rowcount == 1

    def cancel(self, run_id: str, tenant_id: str | None = None) -> str | None:
        """Cancel a queued or running run; returns the status after the call (None = no such run)."""
        with session_scope(self.factory) as s:
            run = s.get(Run, run_id)
            if run is None or (tenant_id is not None and run.tenant_id != tenant_id):
                return None
            if run.status in TERMINAL:
                return run.status
            run.status = "cancelled"
            run.cancel_requested = True
            run.finished_at = utcnow()
            run.error = "cancelled by request"
            return "cancelled"

    def list(self, *, workflow_id: str | None = None, tenant_id: str = DEFAULT_TENANT,
             limit: int = 50, before: str | None = None) -> tuple[list[dict], str | None]:
        """Newest first; `before` is the cursor (a run id) returned by the previous page."""
        with session_scope(self.factory) as s:
            q = select(Run).where(Run.tenant_id == tenant_id)
            if workflow_id is not None:
                q = q.where(Run.workflow_id == workflow_id)
            if before:
                anchor = s.get(Run, before)
                if anchor is not None and anchor.tenant_id == tenant_id:  # another tenant's id tells nothing
                    # row-value comparison: an index seek to the cursor, not a walk past every
                    # newer run as the equivalent OR did (bench/scale.py)
                    q = q.where(tuple_(Run.created_at, Run.id) < tuple_(anchor.created_at, anchor.id))
            rows = list(s.scalars(q.order_by(Run.created_at.desc(), Run.id.desc()).limit(limit + 1)))
            items = [run_dict(r) for r in rows[:limit]]
            for item in items:
                item.pop("input", None)
                item.pop("state", None)
            return items, (rows[limit - 1].id if len(rows) > limit else None)

    # ---- steps

    @retry_on_disconnect
    def step_started(self, run_id: str, node_id: str, node_type: str, attempt: int = 1,
                     queue: str | None = None, worker: str | None = None, tenant_id: str | None = None,
                     step_key: str | None = None, input: dict | None = None) -> dict:
        """`input`: the state the node reads (kept, redacted, for the run's trace)."""
        with session_scope(self.factory) as s:
            if tenant_id is None:
                tenant_id = s.scalar(select(Run.tenant_id).where(Run.id == run_id)) or DEFAULT_TENANT
            if step_key is not None:
                # A redelivered step: the earlier attempt that never finished is closed as lost.
                s.execute(update(Step).where(Step.step_key == step_key, Step.status == "running")
                          .values(status="lost", finished_at=utcnow(), error="worker lost; step retried"))
                attempt = 1 + (s.scalar(select(func.count()).select_from(Step).where(Step.step_key == step_key)) or 0)
            step = Step(run_id=run_id, tenant_id=tenant_id, node_id=node_id, node_type=node_type, step_key=step_key,
                        status="running", attempt=attempt, queue=queue, worker=worker, started_at=utcnow(),
                        input=redact(input) if input is not None else None)
            s.add(step)
            s.flush()
            return step_dict(step)

    @retry_on_disconnect
    def step_ended(self, run_id: str, node_id: str, *, status: str, duration_ms: float, tokens: int = 0,
                   cost: float = 0.0, error: str | None = None, output: dict | None = None) -> dict | None:
        with session_scope(self.factory) as s:
            step = s.scalars(select(Step).where(Step.run_id == run_id, Step.node_id == node_id,
                                                Step.status == "running").order_by(Step.id.desc()).limit(1)).first()
            if step is None:
                return None
            step.status = status
            step.finished_at = utcnow()
            step.duration_ms = duration_ms
            step.tokens = tokens
            step.cost = cost
            step.error = redact(error)
            step.output = redact(output) if output is not None else None
            s.flush()
            return step_dict(step)

    @retry_on_disconnect
    def finished_step_output(self, step_key: str) -> dict | None:
        """The output of a step that already succeeded under this key (None if none did)."""
        with session_scope(self.factory) as s:
            step = s.scalars(select(Step).where(Step.step_key == step_key, Step.status == "succeeded")
                             .limit(1)).first()
            return (step.output or {}) if step is not None else None

    @retry_on_disconnect
    def step_running(self, step_key: str) -> bool:
        """Has an attempt of this step started and not ended (its worker may have died)?"""
        with session_scope(self.factory) as s:
            return s.scalar(select(Step.id).where(Step.step_key == step_key, Step.status == "running")
                            .limit(1)) is not None

    def recover_interrupted(self) -> list[str]:
        """Embedded mode, at start: fail runs cut off mid-way (their steps may have been
        paid; re-running them silently would pay again) and return the never-started ones."""
        with session_scope(self.factory) as s:
            s.execute(update(Run).where(Run.status == "running").values(
                status="failed", finished_at=utcnow(),
                error="the server stopped while this run was in progress; start it again"))
            return list(s.scalars(select(Run.id).where(Run.status == "queued").order_by(Run.created_at)))

    @retry_on_disconnect
    def heartbeat(self, run_id: str) -> None:
        with session_scope(self.factory) as s:
            s.execute(update(Run).where(Run.id == run_id).values(heartbeat_at=utcnow()))

    def steps(self, run_id: str) -> list[dict]:
        with session_scope(self.factory) as s:
            return [step_dict(x) for x in s.scalars(select(Step).where(Step.run_id == run_id).order_by(Step.id))]
