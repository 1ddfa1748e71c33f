"""Run and step records: created by the API, written by whoever executes the run."""

from __future__ import annotations

import functools
import json
import re
import time
import uuid
from datetime import datetime, timezone
from typing import Any, Callable, Literal, TypeVar, get_args

from sqlalchemy import and_, func, literal, select, tuple_, update
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from ..graph.secrets import redact
from . import crypto
from .db import autocommit_one, one_statement, session_scope
from .models import DEFAULT_TENANT, Run, Step, utcnow

# The one definition of a run's statuses (the API imports it). `waiting`: paused on a
# person (a `human` node); a run waiting for remote steps or child runs stays `running`.
RunStatus = Literal["queued", "running", "waiting", "succeeded", "failed", "cancelled"]
RUN_STATUSES: tuple[str, ...] = get_args(RunStatus)
TERMINAL = ("succeeded", "failed", "cancelled")
RESUMABLE = ("queued", "running", "waiting")  # what a driver may (re)start


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


_STEP_FIELDS = ("run_id", "node_id", "node_type", "status", "attempt", "queue", "worker", "started_at",
                "finished_at", "duration_ms", "tokens", "cost", "error")


def _aware(value: datetime | None) -> datetime | None:
    """SQLite hands timestamps back naive; they were written in UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value


def step_dict(step: Any) -> dict[str, Any]:
    """A step row (ORM object or Core row mapping) as the API and events show it."""
    get = step.__getitem__ if isinstance(step, dict) else lambda k: getattr(step, k)
    out = {k: get(k) for k in _STEP_FIELDS}
    out["started_at"], out["finished_at"] = _iso(out["started_at"]), _iso(out["finished_at"])
    return out


_RUN_FIELDS = ("id", "workflow_id", "workflow_version", "status", "input", "state", "error", "tokens_used", "cost",
               "attempts", "created_at", "started_at", "finished_at", "parent_run_id", "rerun_from", "waiting_for")


def public_waits(waits: list | None) -> list[dict]:
    """What a person may answer (contract section 5): the human waits, without step keys."""
    return [{"node": w["node"], "prompt": w.get("prompt", ""), "choices": list(w.get("choices") or [])}
            for w in (waits or []) if w.get("kind") == "human"]


def run_dict(run: Any, steps: list | None = None) -> dict[str, Any]:
    """A run (ORM object or Core row mapping) as the API and events show it."""
    get = run.__getitem__ if isinstance(run, dict) else lambda k: getattr(run, k)
    out = {("run_id" if k == "id" else k): get(k) for k in _RUN_FIELDS}
    for k in ("created_at", "started_at", "finished_at"):
        out[k] = _iso(out[k])
    out["waiting_for"] = public_waits(out["waiting_for"]) if out["status"] == "waiting" else []
    if steps is not None:
        out["steps"] = [step_dict(s) for s in steps]
    return out


def _start_statements() -> dict[str, Any]:
    """The submit path's statements, built once: composing Core constructs on every request
    cost more than running them. Postgres runs one statement (the audit row in a CTE) on
    the driver; SQLite two, as typed text."""
    from sqlalchemy import JSON, DateTime, bindparam, text

    run = ("INSERT INTO runs (id, tenant_id, workflow_id, status, input, options, tokens_used, cost, attempts, "
           "cancel_requested, created_at, workflow_version, spec) "
           "SELECT CAST(:id AS VARCHAR), CAST(:tenant_id AS VARCHAR), CAST(:workflow_id AS VARCHAR), 'queued', :input, :options, 0, 0.0, 0, false, :created_at, "
           "v.version, v.spec FROM workflows w JOIN workflow_versions v ON v.tenant_id = w.tenant_id "
           "AND v.workflow_id = w.id AND v.version = w.current_version "
           "WHERE w.tenant_id = :tenant_id AND w.id = :workflow_id RETURNING workflow_version")
    audit_cols = "tenant_id, subject, role, action, target_type, target_id, ip, detail, at"
    audit_vals = ", ".join(f":a_{c}" for c in audit_cols.split(", "))
    audit = f"INSERT INTO audit_log ({audit_cols}) VALUES ({audit_vals})"
    pg_audit = (f"WITH started AS ({run}), logged AS (INSERT INTO audit_log ({audit_cols}) "
                f"SELECT {audit_vals} FROM started) SELECT workflow_version FROM started")
    typed = [bindparam("input", type_=Run.__table__.c.input.type), bindparam("options", type_=JSON),
             bindparam("created_at", type_=DateTime(timezone=True))]
    audit_typed = [bindparam("a_detail", type_=JSON), bindparam("a_at", type_=DateTime(timezone=True))]

    def psycopg(sql: str) -> str:  # the driver's parameter style; JSON arrives serialized
        sql = re.sub(r":(\w+)", r"%(\1)s", sql)
        for name in ("input", "options", "a_detail"):
            sql = sql.replace(f"%({name})s", f"CAST(%({name})s AS json)")
        return sql

    return {"run": text(run).bindparams(*typed), "audit": text(audit).bindparams(*audit_typed),
            "psycopg": psycopg(run), "psycopg_audit": psycopg(pg_audit)}


_START_SQL = _start_statements()


def _hot_statements() -> dict[str, Any]:
    """The statements every run executes several times, built once with bound parameters:
    composing them per call cost more CPU than executing them (bench/throughput.py)."""
    from sqlalchemy import bindparam as p

    steps, runs = Step.__table__, Run.__table__
    step_cols = ("run_id", "node_id", "node_type", "status", "attempt", "queue", "worker", "started_at",
                 "tokens", "cost", "input")
    source = select(*(p(k, type_=steps.c[k].type) for k in step_cols), runs.c.tenant_id)
    not_cancelled = runs.c.status != "cancelled"
    ended = {"status": p("status"), "finished_at": p("finished_at"), "duration_ms": p("duration_ms"),
             "tokens": p("tokens"), "cost": p("cost"), "error": p("error"), "output": p("output", type_=steps.c.output.type)}
    finished = {"status": p("status"), "finished_at": p("finished_at"), "error": p("error")}
    closing = ("finished_at", "duration_ms", "error", "output")  # what an ended step adds to a started one
    wait = runs.update().where(runs.c.id == p("run_id"), runs.c.status == "running").values(
        status=p("status"), waiting_for=p("waiting_for", type_=runs.c.waiting_for.type), heartbeat_at=p("now"))
    return {
        # a step of a run that is not cancelled, its tenant copied from the run
        "start": steps.insert().from_select([*step_cols, "tenant_id"], source.where(
            runs.c.id == p("run_id"), not_cancelled)).returning(steps.c.id),
        # the same for a keyed step (node tasks) when no attempt of that key exists yet
        "start_keyed": steps.insert().from_select([*step_cols, "step_key", "tenant_id"], select(
            *(p(k, type_=steps.c[k].type) for k in step_cols), p("step_key", type_=steps.c.step_key.type),
            runs.c.tenant_id).where(runs.c.id == p("run_id"), not_cancelled, ~select(steps.c.id).where(
                steps.c.step_key == p("step_key")).exists())).returning(steps.c.id),
        # an instant step (input, aggregator) recorded once it ended: one row, no running phase;
        # nothing is written when the run is cancelled or the key has a row already
        "record": steps.insert().from_select([*step_cols, *closing, "step_key", "tenant_id"], select(
            *(p(k, type_=steps.c[k].type) for k in (*step_cols, *closing)),
            p("step_key", type_=steps.c.step_key.type), runs.c.tenant_id).where(
            runs.c.id == p("run_id"), not_cancelled, ~select(steps.c.id).where(
                steps.c.step_key == p("step_key")).exists())).returning(steps.c.id),
        "end": steps.update().where(steps.c.id == p("step_id"), steps.c.status == "running").values(**ended)
        .returning(*(steps.c[k] for k in _STEP_FIELDS)),
        "get": select(runs.c.tenant_id, *(runs.c[k] for k in _RUN_FIELDS)).where(runs.c.id == p("run_id")),
        "get_steps": select(*(steps.c[k] for k in _STEP_FIELDS)).where(steps.c.run_id == p("run_id"))
        .order_by(steps.c.id),
        "check": select(runs.c.status, steps.c.id, steps.c.output).select_from(runs).outerjoin(
            steps, and_(steps.c.step_key == p("step_key"), steps.c.status == "succeeded"))
        .where(runs.c.id == p("run_id")).limit(1),
        # a step's outcome: succeeded before failed, so a success after a failed attempt wins
        "outcome": select(runs.c.status, steps.c.status, steps.c.output, steps.c.error).select_from(runs).outerjoin(
            steps, and_(steps.c.step_key == p("step_key"), steps.c.status.in_(("succeeded", "failed"))))
        .where(runs.c.id == p("run_id")).order_by(steps.c.status.desc()).limit(1),
        "begin": runs.update().where(runs.c.id == p("run_id"), runs.c.status.in_(RESUMABLE))
        # started_at is the first advance's: a run that waited (a step, a person) keeps its start
        .values(status="running", started_at=func.coalesce(runs.c.started_at, p("now")), heartbeat_at=p("now"),
                attempts=runs.c.attempts + 1)
        .returning(runs.c.spec, runs.c.input, runs.c.options, runs.c.rerun_from, runs.c.tenant_id, runs.c.attempts,
                   runs.c.started_at),
        "finish": runs.update().where(runs.c.id == p("run_id"), runs.c.status.notin_(TERMINAL)).values(
            **finished, waiting_for=None),
        "finish_state": runs.update().where(runs.c.id == p("run_id"), runs.c.status.notin_(TERMINAL)).values(
            **finished, waiting_for=None, state=p("state", type_=runs.c.state.type), tokens_used=p("tokens_used"),
            cost=p("cost")),
        "finish_get": runs.update().where(runs.c.id == p("run_id"), runs.c.status.notin_(TERMINAL)).values(
            **finished, waiting_for=None).returning(runs.c.tenant_id, *(runs.c[k] for k in _RUN_FIELDS)),
        "finish_state_get": runs.update().where(runs.c.id == p("run_id"), runs.c.status.notin_(TERMINAL)).values(
            **finished, waiting_for=None, state=p("state", type_=runs.c.state.type), tokens_used=p("tokens_used"),
            cost=p("cost")).returning(runs.c.tenant_id, *(runs.c[k] for k in _RUN_FIELDS)),
        "wait": wait,
        # the same, only while no newer driver has begun the run (see advance_fence)
        "wait_fenced": wait.where(runs.c.attempts == p("advances")),
    }


_HOT = _hot_statements()


def _descendants(s: Session, run_id: str) -> list[str]:
    """Ids of the child runs under a run, every generation: one query a generation."""
    out: list[str] = []
    parents = [run_id]
    while parents:
        parents = list(s.scalars(select(Run.id).where(Run.parent_run_id.in_(parents), Run.child_key.is_not(None))))
        out += parents
    return out


class StepDone(Exception):
    """A new attempt of a step whose earlier attempt has ended meanwhile (start_step's
    `unless_done`). The step row is the fence between a worker that was cut off and the one
    that took its step over: the late worker's result lands only while its attempt is still
    `running` (end_step), and a new attempt closes it as `lost` first. Both are single
    statements ordered by the row's lock, so whichever comes first wins and the other sees
    it: the late result is discarded, or the new attempt stops before it calls anything."""


def advance_fence(run_id: str, attempts: int) -> tuple[str, tuple]:
    """(SQL, parameters) that find a run's row only while `attempts` (what `begin` returned)
    is still its count of advances, and share-lock it until the caller's transaction ends: run
    inside a driver's checkpoint write, that write commits only if no newer driver has begun
    the run, and a newer `begin` (it increments attempts) waits until the write is in."""
    return f"SELECT 1 FROM {Run.__tablename__} WHERE id = %s AND attempts = %s FOR SHARE", (run_id, attempts)


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

    def create_from_workflow(self, tenant_id: str, workflow_id: str, run_input: dict, *,
                             options: dict | None = None, audit: dict | None = None) -> tuple[str, int] | None:
        """A queued run of the workflow's current version, or None if the tenant has no such
        workflow. The spec is copied inside the database (INSERT ... SELECT) instead of being
        read into the API and written back. `audit`: the audit_log row of this start
        (`AuditStore.row`, target filled in here), written in the same statement on Postgres
        and the same transaction on SQLite: this is the submit path (bench/api_submit.py)."""
        run_id = str(uuid.uuid4())
        params = {"id": run_id, "tenant_id": tenant_id, "workflow_id": workflow_id,
                  "input": redact(run_input), "options": options or None, "created_at": utcnow()}
        if audit is not None:
            params.update({f"a_{k}": v for k, v in audit.items()}, a_target_id=run_id)
        engine = self.engine
        if engine.dialect.driver == "psycopg":
            # one statement, so it needs no transaction around it: one round trip
            params["input"] = crypto.seal(params["input"], "runs.input")  # the driver skips the column type
            for key in ("input", "options", "a_detail"):
                if params.get(key) is not None:
                    params[key] = json.dumps(params[key])
            row = autocommit_one(engine, _START_SQL["psycopg_audit" if audit is not None else "psycopg"], params)
            version = row[0] if row else None
        else:
            with engine.begin() as conn:
                version = conn.execute(_START_SQL["run"], params).scalar()
                if version is not None and audit is not None:
                    conn.execute(_START_SQL["audit"], params)
        return None if version is None else (run_id, version)

    def run_options(self, run_id: str) -> tuple[dict, str | None]:
        """(options, rerun_from) of a run: how its executor must start it."""
        with session_scope(self.factory) as s:
            row = s.execute(select(Run.options, Run.rerun_from).where(Run.id == run_id)).first()
            return (dict(row[0] or {}), row[1]) if row is not None else ({}, None)

    def get(self, run_id: str, tenant_id: str | None = None, with_steps: bool = True) -> dict | None:
        # Core, and only the columns shown (the ORM loaded the spec and every step's input and
        # output JSON too); two reads in autocommit, no BEGIN and ROLLBACK: every poll and run end
        with one_statement(self.engine) as conn, crypto.about(f"run {run_id}"):
            row = conn.execute(_HOT["get"], {"run_id": run_id}).first()
            if row is None or (tenant_id is not None and row.tenant_id != tenant_id):
                return None
            rows = None
            if with_steps:
                rows = [dict(r._mapping) for r in conn.execute(_HOT["get_steps"], {"run_id": run_id})]
            return run_dict(dict(row._mapping), rows)

    @retry_on_disconnect
    def spec_of(self, run_id: str) -> tuple[dict, dict, str] | None:
        with session_scope(self.factory) as s, crypto.about(f"run {run_id}"):
            run = s.get(Run, run_id)
            return (run.spec, run.input, run.status) if run else None

    @retry_on_disconnect
    def tenant_of(self, run_id: str) -> str | None:
        with session_scope(self.factory) as s:
            return s.scalar(select(Run.tenant_id).where(Run.id == run_id))

    @retry_on_disconnect
    def status(self, run_id: str) -> str | None:
        with session_scope(self.factory) as s:
            return s.scalar(select(Run.status).where(Run.id == run_id))

    @retry_on_disconnect
    def statuses(self, run_ids: list[str]) -> dict[str, str]:
        """{run id: status} of the runs that exist, in one query per 500 ids (the API's live
        event hub checks every watched run at once, not each watcher its own)."""
        out: dict[str, str] = {}
        with session_scope(self.factory) as s:
            for i in range(0, len(run_ids), 500):
                rows = s.execute(select(Run.id, Run.status).where(Run.id.in_(run_ids[i:i + 500])))
                out.update((run_id, status) for run_id, status in rows)
        return out

    @retry_on_disconnect
    def begin(self, run_id: str) -> dict | None:
        """Mark a queued (or resumed) run running and return what its executor needs
        (spec, input, options, rerun_from, tenant_id, attempts, started_at) in one statement; None when the run
        is missing, ended or cancelled, or failed here because its encryption key is not configured."""
        try:
            with one_statement(self.engine) as conn, crypto.about(f"run {run_id}"):
                row = conn.execute(_HOT["begin"], {"run_id": run_id, "now": utcnow()}).first()
        except crypto.KeyUnavailable as exc:
            # this executor lacks the run's key: the run ends with the reason, not stuck running
            self.finish(run_id, "failed", error=str(exc))
            return None
        if row is None:
            return None
        out = dict(row._mapping)
        out["options"] = dict(out["options"] or {})
        return out

    @retry_on_disconnect
    def wait(self, run_id: str, waits: list[dict], attempts: int | None = None) -> bool:
        """A running run pauses: it waits for `waits` (each {"kind", "node", "key", ...}).
        Its status becomes `waiting` when a person must answer, else it stays `running`.
        With `attempts` (what `begin` returned), only while no newer driver has begun the run:
        a driver that was cut off must not write what it waits for over a newer driver's.
        False when nothing was written."""
        status = "waiting" if any(w.get("kind") == "human" for w in waits) else "running"
        values = {"run_id": run_id, "status": status, "waiting_for": waits, "now": utcnow()}
        with one_statement(self.engine) as conn:
            if attempts is None:
                res = conn.execute(_HOT["wait"], values)
            else:
                res = conn.execute(_HOT["wait_fenced"], {**values, "advances": attempts})
            return res.rowcount == 1

    def waiting_runs(self) -> list[tuple[str, list[dict]]]:
        """(id, waiting_for) of every run that waits for a person."""
        with session_scope(self.factory) as s:
            return [(r[0], list(r[1] or [])) for r in s.execute(
                select(Run.id, Run.waiting_for).where(Run.status == "waiting")).all()]

    def waits_of(self, run_id: str) -> tuple[str | None, list[dict]]:
        """(status, what it waits for) of a run."""
        with session_scope(self.factory) as s:
            row = s.execute(select(Run.status, Run.waiting_for).where(Run.id == run_id)).first()
            return (row[0], list(row[1] or [])) if row else (None, [])

    @retry_on_disconnect
    def step_outcome(self, run_id: str, step_key: str) -> tuple[str | None, str | None, dict | None, str | None]:
        """(run status, "succeeded"/"failed"/None, output, error) of a step key, in one query."""
        with one_statement(self.engine) as conn:
            row = conn.execute(_HOT["outcome"], {"run_id": run_id, "step_key": step_key}).first()
        if row is None:
            return None, None, None, None
        return row[0], row[1], (row[2] or {}) if row[1] == "succeeded" else None, row[3]

    @retry_on_disconnect
    def open_wait(self, run_id: str, node_id: str, node_type: str, step_key: str,
                  input: dict | None = None) -> datetime | None:
        """The step row of a node that waits (a person's answer): written once per key with
        status `waiting`; returns when the wait began (its deadline counts from there), or
        None when the run is gone or cancelled."""
        steps = Step.__table__
        with self.engine.begin() as conn:
            row = conn.execute(select(steps.c.started_at, steps.c.status).where(steps.c.step_key == step_key)
                               .order_by(steps.c.id).limit(1)).first()
            if row is not None:
                return _aware(row[0])
            run = conn.execute(select(Run.tenant_id, Run.status).where(Run.id == run_id)).first()
            if run is None or run[1] == "cancelled":
                return None
            now = utcnow()
            conn.execute(steps.insert().values(
                run_id=run_id, tenant_id=run[0], node_id=node_id, node_type=node_type, step_key=step_key,
                status="waiting", attempt=1, started_at=now, tokens=0, cost=0.0,
                input=redact(input) if input is not None else None))
            return now

    @retry_on_disconnect
    def answer(self, step_key: str, output: dict) -> dict | None:
        """Close a waiting step with its answer; None when it was answered (or closed) already:
        of two answers at once, exactly one wins."""
        steps = Step.__table__
        now = utcnow()
        with self.engine.begin() as conn:
            row = conn.execute(steps.update().where(steps.c.step_key == step_key, steps.c.status == "waiting")
                               .values(status="succeeded", finished_at=now, output=redact(output))
                               .returning(*(steps.c[k] for k in _STEP_FIELDS))).first()
            if row is None:
                return None
            step = dict(row._mapping)
            started = _aware(step["started_at"])
            duration = (now - started).total_seconds() * 1000 if started else None
            conn.execute(steps.update().where(steps.c.step_key == step_key, steps.c.status == "succeeded")
                         .values(duration_ms=duration))
            step["duration_ms"], step["finished_at"] = duration, now
            return step_dict(step)

    def stale_runs(self, older_than: datetime, limit: int = 500) -> list[tuple[str, str, list]]:
        """(id, status, waiting_for) of queued and running runs not heard of since `older_than`,
        oldest first; each is stamped now, so the recovery sweep looks at it once a period."""
        with session_scope(self.factory) as s:
            rows = s.execute(select(Run.id, Run.status, Run.waiting_for).where(
                Run.status.in_(("queued", "running")),
                func.coalesce(Run.heartbeat_at, Run.created_at) < older_than)
                .order_by(func.coalesce(Run.heartbeat_at, Run.created_at)).limit(limit)).all()
            if rows:
                s.execute(update(Run).where(Run.id.in_([r[0] for r in rows])).values(heartbeat_at=utcnow()))
            return [(r[0], r[1], list(r[2] or [])) for r in rows]

    @retry_on_disconnect
    def mark_running(self, run_id: str) -> bool:
        """queued/running -> running; False when the run already ended or was cancelled."""
        with session_scope(self.factory) as s:
            res = s.execute(update(Run).where(Run.id == run_id, Run.status.in_(("queued", "running")))
                            .values(status="running", started_at=utcnow(), heartbeat_at=utcnow(),
                                    attempts=Run.attempts + 1))
            return res.rowcount == 1

    @retry_on_disconnect
    def finish_and_get(self, run_id: str, status: str, state: dict | None = None,
                       error: str | None = None) -> dict | None:
        """`finish`, then the run as `get` shows it, on one connection: the UPDATE returns the
        run's row, so only its steps are read. A run that had ended already is read as is."""
        values = self._finish_values(run_id, status, state, error)
        with one_statement(self.engine) as conn, crypto.about(f"run {run_id}"):
            row = conn.execute(_HOT["finish_get" if state is None else "finish_state_get"], values).first()
            if row is None:
                row = conn.execute(_HOT["get"], {"run_id": run_id}).first()
                if row is None:
                    return None
            steps = [dict(r._mapping) for r in conn.execute(_HOT["get_steps"], {"run_id": run_id})]
            return run_dict(dict(row._mapping), steps)

    @staticmethod
    def _finish_values(run_id: str, status: str, state: dict | None, error: str | None) -> dict:
        state = redact(state) if state is not None else None
        values: dict[str, Any] = {"run_id": run_id, "status": status, "finished_at": utcnow(), "error": redact(error)}
        if state is not None:
            values["state"] = state
            values["tokens_used"] = int(state.get("tokens_used") or 0)
            values["cost"] = float(state.get("cost") or 0.0)
        return values

    @retry_on_disconnect
    def finish(self, run_id: str, status: str, state: dict | None = None, error: str | None = None) -> bool:
        values = self._finish_values(run_id, status, state, error)
        with one_statement(self.engine) as conn:
            res = conn.execute(_HOT["finish" if state is None else "finish_state"], values)
            return res.rowcount == 1

    def cancel(self, run_id: str, tenant_id: str | None = None) -> str | None:
        """Cancel a queued or running run and every child run under it (workflow and map
        nodes); returns the run's status after the call (None = no such run)."""
        with session_scope(self.factory) as s:
            run = s.get(Run, run_id)
            if run is None or (tenant_id is not None and run.tenant_id != tenant_id):
                return None
            if run.status in TERMINAL:
                return run.status
            run.status = "cancelled"
            run.waiting_for = None
            run.cancel_requested = True
            run.finished_at = utcnow()
            run.error = "cancelled by request"
            children = _descendants(s, run_id)
            for chunk in range(0, len(children), 500):
                s.execute(update(Run).where(Run.id.in_(children[chunk:chunk + 500]), Run.status.notin_(TERMINAL))
                          .values(status="cancelled", cancel_requested=True, finished_at=utcnow(),
                                  error=f"cancelled with its parent run {run_id}"))
            return "cancelled"

    # ---- child runs (workflow and map nodes)

    def descendants(self, run_id: str) -> list[str]:
        """Ids of the child runs under a run, every generation."""
        with session_scope(self.factory) as s:
            return _descendants(s, run_id)

    @retry_on_disconnect
    def start_children(self, parent_run_id: str, step_key: str, workflow_id: str, version: int,
                       spec: dict, inputs: list[dict]) -> list[tuple[str, bool]]:
        """(run id, created now) of each child of a parent's step, in the order of `inputs`.
        Idempotent by (step key, index): children that exist are found, not made again."""
        keys = [f"{step_key}#{i}" for i in range(len(inputs))]
        for attempt in range(3):
            with session_scope(self.factory) as s:
                tenant = s.scalar(select(Run.tenant_id).where(Run.id == parent_run_id))
                if tenant is None:
                    raise LookupError(f"run {parent_run_id} not found")
                found = {}
                for chunk in range(0, len(keys), 500):
                    found.update(s.execute(select(Run.child_key, Run.id).where(
                        Run.child_key.in_(keys[chunk:chunk + 500]))).all())
                out = []
                try:
                    for key, run_input in zip(keys, inputs):
                        if key in found:
                            out.append((found[key], False))
                            continue
                        child = Run(id=str(uuid.uuid4()), tenant_id=tenant, workflow_id=workflow_id,
                                    workflow_version=version, spec=spec, status="queued",
                                    input=redact(run_input), parent_run_id=parent_run_id, child_key=key)
                        s.add(child)
                        out.append((child.id, True))
                    s.flush()
                except IntegrityError:  # another driver of the same step made them meanwhile
                    if attempt == 2:
                        raise
                    s.rollback()
                    continue
                return out
        raise AssertionError("unreachable")

    @retry_on_disconnect
    def step_children(self, step_key: str) -> list[dict]:
        """The child runs of one parent step, in index order: run_id, status, state, error."""
        # keys are "<step_key>#<index>": a range on the unique index ('$' follows '#')
        with session_scope(self.factory) as s:
            rows = s.execute(select(Run.id, Run.status, Run.state, Run.error, Run.child_key)
                             .where(Run.child_key >= f"{step_key}#", Run.child_key < f"{step_key}$")).all()
        out = [{"run_id": r.id, "status": r.status, "state": r.state, "error": r.error,
                "index": int(r.child_key.rpartition("#")[2])} for r in rows]
        return sorted(out, key=lambda c: c["index"])

    @retry_on_disconnect
    def child_of(self, run_id: str) -> tuple[str, str] | None:
        """(parent run id, the parent's step key) of a child run; None for any other run."""
        with session_scope(self.factory) as s:
            row = s.execute(select(Run.parent_run_id, Run.child_key).where(Run.id == run_id)).first()
        if row is None or row.child_key is None or row.parent_run_id is None:
            return None
        return row.parent_run_id, row.child_key.rpartition("#")[0]

    def children(self, run_id: str) -> list[dict]:
        """The child runs of a run (workflow and map nodes), by step and index."""
        with session_scope(self.factory) as s:
            rows = s.execute(select(Run.id, Run.workflow_id, Run.workflow_version, Run.status, Run.error,
                                    Run.child_key, Run.created_at, Run.finished_at, Run.tokens_used, Run.cost)
                             .where(Run.parent_run_id == run_id, Run.child_key.is_not(None))).all()
        out = []
        for r in rows:
            step_key, _, index = r.child_key.rpartition("#")
            node = step_key.split(":")[-2] if step_key.count(":") >= 2 else None
            out.append({"run_id": r.id, "workflow_id": r.workflow_id, "workflow_version": r.workflow_version,
                        "status": r.status, "error": r.error, "node_id": node, "step_key": step_key,
                        "index": int(index) if index.isdigit() else 0, "tokens_used": r.tokens_used,
                        "cost": r.cost, "created_at": _iso(r.created_at), "finished_at": _iso(r.finished_at)})
        out.sort(key=lambda c: (c["created_at"] or "", c["step_key"], c["index"]))
        return out

    def list(self, *, workflow_id: str | None = None, tenant_id: str = DEFAULT_TENANT,
             limit: int = 50, before: str | None = None,
             parent_run_id: str | None = None) -> tuple[list[dict], str | None]:
        """Newest first; `before` is the cursor (a run id) returned by the previous page.
        `parent_run_id`: only the runs it started or that re-run it."""
        listed = [Run.__table__.c[k] for k in _RUN_FIELDS if k not in ("input", "state")]  # nothing to decrypt
        with session_scope(self.factory) as s:
            q = select(*listed).where(Run.tenant_id == tenant_id)
            if workflow_id is not None:
                q = q.where(Run.workflow_id == workflow_id)
            if parent_run_id is not None:
                q = q.where(Run.parent_run_id == parent_run_id)
            if before:
                anchor = s.execute(select(Run.created_at, Run.id, Run.tenant_id).where(Run.id == before)).first()
                if anchor is not None and anchor.tenant_id == tenant_id:  # another tenant's id tells nothing
                    # row-value comparison: an index seek to the cursor, not a walk past every
                    # newer run as the equivalent OR did (bench/scale.py)
                    q = q.where(tuple_(Run.created_at, Run.id) < tuple_(anchor.created_at, anchor.id))
            rows = list(s.execute(q.order_by(Run.created_at.desc(), Run.id.desc()).limit(limit + 1)))
            items = [run_dict({"input": None, "state": None, **r._mapping}) for r in rows[:limit]]
            for item in items:
                del item["input"], item["state"]
            return items, (rows[limit - 1].id if len(rows) > limit else None)

    # ---- steps

    # Steps are written by Core statements on one connection each: a step is the hot path
    # of every run (two writes per node), and the ORM unit of work cost more CPU than the
    # statements themselves (bench/throughput.py).

    @property
    def engine(self):
        return self.factory.kw["bind"]

    @retry_on_disconnect
    def start_step(self, run_id: str, node_id: str, node_type: str, attempt: int = 1,
                   queue: str | None = None, worker: str | None = None, tenant_id: str | None = None,
                   step_key: str | None = None, input: dict | None = None,
                   unless_cancelled: bool = False, unless_done: bool = False) -> tuple[int, dict] | None:
        """Record a step as running; returns (step id, step), or None when the run no longer
        exists (deleted: to its caller, as if cancelled) or, with `unless_cancelled`, was
        cancelled (checked in the same transaction).
        `input`: the state the node reads (kept, redacted, for the run's trace).
        `unless_done`: raise StepDone when an earlier attempt of `step_key` ended (succeeded or failed), checked
        after closing the unfinished ones as lost, in the same transaction: of a late worker
        recording its result and a new attempt starting, exactly one wins (see StepDone)."""
        steps = Step.__table__
        if tenant_id is None:
            started = self._start_step_at_once(run_id, node_id, node_type, attempt, queue, worker, input, step_key)
            if started is not None:
                return started
            if unless_cancelled and self.status(run_id) == "cancelled":
                return None
        with self.engine.begin() as conn:
            prior = select(func.count()).select_from(steps).where(steps.c.step_key == step_key).scalar_subquery() \
                if step_key is not None else literal(0)
            row = conn.execute(select(Run.tenant_id, Run.status, prior).where(Run.id == run_id)).first()
            if row is None or (unless_cancelled and row[1] == "cancelled"):
                return None
            if tenant_id is None:
                tenant_id = row[0]
            if step_key is not None and row[2]:
                # A redelivered step: the earlier attempt that never finished is closed as lost.
                conn.execute(steps.update().where(steps.c.step_key == step_key, steps.c.status == "running")
                             .values(status="lost", finished_at=utcnow(), error="worker lost; step retried"))
                # a failed attempt ends its step too: a step is tried again only by its node's
                # own retries, never by a second message (which may be one sent again after
                # Redis lost the step's sent-marker: it skips the outcome look-up)
                if unless_done and conn.execute(select(steps.c.id).where(
                        steps.c.step_key == step_key, steps.c.status.in_(("succeeded", "failed")))
                        .limit(1)).first() is not None:
                    raise StepDone(step_key)
                attempt = 1 + row[2]
            values = {"run_id": run_id, "tenant_id": tenant_id, "node_id": node_id, "node_type": node_type,
                      "step_key": step_key, "status": "running", "attempt": attempt, "queue": queue,
                      "worker": worker, "started_at": utcnow(), "tokens": 0, "cost": 0.0,
                      "input": redact(input) if input is not None else None}
            step_id = conn.execute(steps.insert().values(**values).returning(steps.c.id)).scalar_one()
        return step_id, step_dict({k: values.get(k) for k in _STEP_FIELDS})

    def _start_step_at_once(self, run_id, node_id, node_type, attempt, queue, worker, input, step_key=None):
        """A step of a run that is not cancelled, its tenant copied from the run, in one
        INSERT ... SELECT: the driver's own nodes and embedded runs (no step key), and the
        first attempt of a node task's step (no row of its key yet). None when no row was
        written: the run is cancelled or missing, or the key has an attempt already."""
        values = {"run_id": run_id, "node_id": node_id, "node_type": node_type, "status": "running",
                  "attempt": attempt, "queue": queue, "worker": worker, "started_at": utcnow(), "tokens": 0,
                  "cost": 0.0, "input": redact(input) if input is not None else None}
        with one_statement(self.engine) as conn:
            if step_key is None:
                step_id = conn.execute(_HOT["start"], values).scalar()
            else:
                step_id = conn.execute(_HOT["start_keyed"], {**values, "step_key": step_key}).scalar()
        if step_id is None:
            return None
        return step_id, step_dict({**{k: None for k in _STEP_FIELDS}, **values})

    def step_started(self, run_id: str, node_id: str, node_type: str, attempt: int = 1, **kwargs: Any) -> dict:
        """Record a step as running; returns the step (see start_step)."""
        started = self.start_step(run_id, node_id, node_type, attempt, **kwargs)
        assert started is not None
        return started[1]

    @retry_on_disconnect
    def record_step(self, run_id: str, node_id: str, node_type: str, *, attempt: int, queue: str | None,
                    worker: str | None, started_at: datetime, input: dict | None, step_key: str | None,
                    status: str, duration_ms: float, tokens: int = 0, cost: float = 0.0, error: str | None = None,
                    output: dict | None = None) -> dict | None:
        """A step that already ended, in one INSERT (the running phase was not written); None
        when nothing was: the run is cancelled or missing, or `step_key` has a row already."""
        values = {"run_id": run_id, "node_id": node_id, "node_type": node_type, "status": status,
                  "attempt": attempt, "queue": queue, "worker": worker, "started_at": started_at,
                  "tokens": tokens, "cost": cost, "input": redact(input) if input is not None else None,
                  "finished_at": utcnow(), "duration_ms": duration_ms, "error": redact(error),
                  "output": redact(output) if output is not None else None, "step_key": step_key}
        with one_statement(self.engine) as conn:
            step_id = conn.execute(_HOT["record"], values).scalar()
        if step_id is None:
            return None
        return step_dict({k: values.get(k) for k in _STEP_FIELDS})

    @retry_on_disconnect
    def end_step(self, step_id: int, *, status: str, duration_ms: float, tokens: int = 0, cost: float = 0.0,
                 error: str | None = None, output: dict | None = None) -> dict | None:
        """Close a running step by id; None when it is no longer running (closed as lost)."""
        with one_statement(self.engine) as conn:
            row = conn.execute(_HOT["end"], {
                "step_id": step_id, "status": status, "finished_at": utcnow(), "duration_ms": duration_ms,
                "tokens": tokens, "cost": cost, "error": redact(error),
                "output": redact(output) if output is not None else None}).first()
        return step_dict(dict(row._mapping)) if row is not None else None

    @retry_on_disconnect
    def step_ended(self, run_id: str, node_id: str, *, status: str, duration_ms: float, tokens: int = 0,
                   cost: float = 0.0, error: str | None = None, output: dict | None = None) -> dict | None:
        """Close the newest running step of a node (when its id is not known)."""
        with session_scope(self.factory) as s:
            step_id = s.scalar(select(Step.id).where(Step.run_id == run_id, Step.node_id == node_id,
                                                     Step.status == "running").order_by(Step.id.desc()).limit(1))
        if step_id is None:
            return None
        return self.end_step(step_id, status=status, duration_ms=duration_ms, tokens=tokens, cost=cost,
                             error=error, output=output)

    @retry_on_disconnect
    def step_check(self, run_id: str, step_key: str) -> tuple[str | None, dict | None]:
        """(run status, output of a step that already succeeded under this key or None), in
        one query: what a node task and the driver ask before starting a step."""
        with one_statement(self.engine) as conn:
            row = conn.execute(_HOT["check"], {"run_id": run_id, "step_key": step_key}).first()
        if row is None:
            return None, None
        return row[0], ((row[2] or {}) if row[1] is not None else None)

    @retry_on_disconnect
    def finished_step_output(self, step_key: str) -> dict | None:
        """The output of a step that already succeeded under this key (None if none did)."""
        with session_scope(self.factory) as s:
            step = s.scalars(select(Step).where(Step.step_key == step_key, Step.status == "succeeded")
                             .limit(1)).first()
            return (step.output or {}) if step is not None else None

    @retry_on_disconnect
    def attempt_running(self, step_id: int) -> bool:
        """Is this attempt (a step row) still running: not closed as lost by a new attempt?"""
        with session_scope(self.factory) as s:
            return s.scalar(select(Step.status).where(Step.id == step_id)) == "running"

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
