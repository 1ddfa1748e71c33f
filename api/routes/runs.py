"""Runs: start one from a saved workflow, read it, list, cancel, and follow it live (SSE)."""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from functools import partial
from typing import Annotated, Any, AsyncIterator

import anyio
from fastapi import APIRouter, Body, Query, Request
from fastapi.responses import JSONResponse
from sse_starlette import EventSourceResponse
from starlette.background import BackgroundTask

from ...runs import telemetry
from ...store.runs import TERMINAL
from .. import metrics
from ..audit import claim
from ..body import JSONRoute
from ..deps import Services, ServicesDep, TenantDep
from ..errors import ApiError, db_reason, not_found, scrub
from ..pagination import Cursor, Limit, decode_str, encode
from ..run_events import RESYNC, SSE_SEP, Watch, frame, hub_of
from ...runs.resume import ResumeRefused, answer_run
from ..schemas import (CancelResult, ErrorResponse, ResumeRequest, ResumeResult, RunCreate, RunPage, RunQueued,
                       RunRecord)

log = logging.getLogger("agentflow.api")
router = APIRouter(tags=["runs"], route_class=JSONRoute)

ERRORS = {404: {"model": ErrorResponse}, 409: {"model": ErrorResponse}, 422: {"model": ErrorResponse}}
PING_SECONDS = 15


def _page(items: list[dict], next_id: str | None) -> dict[str, Any]:
    return {"items": items, "next_cursor": encode(next_id) if next_id else None}


# ---------------------------------------------------------------- start, read, list


@router.post("/workflows/{workflow_id}/runs", status_code=202, response_model=RunQueued, responses={
    **ERRORS, 503: {"model": ErrorResponse, "description": "the run could not be queued"}},
    summary="Start a run of the workflow's current version")
async def start_run(workflow_id: str, request: Request, svc: ServicesDep, tenant: TenantDep,
                    body: Annotated[RunCreate | None, Body()] = None) -> JSONResponse:
    # async with one hop to a thread for the blocking part: each hop costs as much CPU as
    # the insert itself on the submit path (bench/api_submit.py)
    body = body or RunCreate()
    audit = claim(request.scope, 202)
    run_id = await anyio.to_thread.run_sync(partial(submit_run, svc, tenant, workflow_id, body, audit,
                                                    request.headers.get("traceparent")))
    metrics.RUNS_SUBMITTED.labels(svc.mode, "api").inc()
    return JSONResponse({"run_id": run_id, "status": "queued"}, status_code=202,
                        headers={"Location": f"/runs/{run_id}"})


def submit_run(svc: Services, tenant: str, workflow_id: str, body: RunCreate, audit: dict | None,
               traceparent: str | None = None) -> str:
    """Create and queue a run of the workflow's current version (also /mcp's tool calls):
    its run id, or ApiError 404 (no such workflow) / 503 (it could not be queued)."""
    # the run's trace (OpenTelemetry, when on) begins here, in the caller's if it sent one
    options = telemetry.with_run_trace({"stream": True} if body.stream else None, traceparent)
    created = svc.runs.create_from_workflow(tenant, workflow_id, body.input.model_dump(),
                                            options=options, audit=audit)
    if created is None:
        raise not_found("workflow", workflow_id)
    run_id = created[0]
    telemetry.submitted(options, run_id, workflow_id)
    try:
        svc.dispatcher.submit(run_id)
    except Exception as exc:
        reason = scrub(str(exc) or type(exc).__name__)[:200]
        log.error("run %s could not be queued: %s", run_id, reason)
        svc.runs.finish(run_id, "failed", error=f"could not be queued: {reason}")
        if audit is not None and "audit" in svc.extra:
            svc.extra["audit"].amend_status(tenant, audit["action"], run_id, 503, f"could not be queued: {reason}")
        raise ApiError(503, f"run could not be queued: {reason}", headers={"Retry-After": "5"}) from None
    return run_id


@router.get("/workflows/{workflow_id}/runs", response_model=RunPage, responses=ERRORS,
            summary="Runs of one workflow, newest first (also of a deleted workflow)")
def list_workflow_runs(workflow_id: str, svc: ServicesDep, tenant: TenantDep, limit: Limit = 50,
                       cursor: Cursor = None) -> dict[str, Any]:
    items, next_id = svc.runs.list(workflow_id=workflow_id, tenant_id=tenant, limit=limit,
                                   before=decode_str(cursor))
    return _page(items, next_id)


@router.get("/runs", response_model=RunPage, responses=ERRORS, summary="Runs, newest first")
def list_runs(svc: ServicesDep, tenant: TenantDep, limit: Limit = 50, cursor: Cursor = None,
              workflow_id: Annotated[str | None, Query(max_length=128)] = None,
              parent_run_id: Annotated[str | None, Query(max_length=36, description=(
                  "Only the runs this run started (workflow and map nodes) or that re-run it."))] = None,
              ) -> dict[str, Any]:
    items, next_id = svc.runs.list(workflow_id=workflow_id, tenant_id=tenant, limit=limit,
                                   before=decode_str(cursor), parent_run_id=parent_run_id)
    return _page(items, next_id)


@router.get("/runs/{run_id}", response_model=RunRecord, responses=ERRORS, summary="A run with its steps")
def get_run(run_id: str, svc: ServicesDep, tenant: TenantDep) -> dict[str, Any]:
    record = svc.runs.get(run_id, tenant)
    if record is None:
        raise not_found("run", run_id)
    record["children"] = svc.runs.children(run_id)
    return record


@router.post("/runs/{run_id}/cancel", response_model=CancelResult, responses=ERRORS,
             summary="Cancel a queued or running run (a finished run keeps its status)")
def cancel_run(run_id: str, svc: ServicesDep, tenant: TenantDep) -> dict[str, Any]:
    status = svc.runs.cancel(run_id, tenant)
    if status is None:
        raise not_found("run", run_id)
    if status == "cancelled":
        # the store cancelled its child runs too (workflow and map nodes): stop them as well
        for child in [run_id, *svc.runs.descendants(run_id)]:
            try:
                svc.dispatcher.cancel(child)
            except Exception as exc:  # the stored flag still stops it at the next step
                log.warning("dispatcher could not cancel run %s: %s", child, scrub(str(exc))[:200])
        record = svc.runs.get(run_id, tenant)
        if record is not None:
            svc.dispatcher.bus.publish(run_id, "end", record)
            notify = svc.extra.get("run_ended")  # outbound webhooks (runs/webhooks.py)
            if notify is not None:
                try:
                    notify(record)
                except Exception as exc:
                    log.warning("run-end notification of run %s failed: %s", run_id, scrub(str(exc))[:200])
    return {"run_id": run_id, "status": status}


@router.post("/runs/{run_id}/resume", status_code=202, response_model=ResumeResult, responses=ERRORS,
             summary="Answer a run that waits for a person (a human node)")
def resume_run(run_id: str, body: ResumeRequest, request: Request, svc: ServicesDep,
               tenant: TenantDep) -> dict[str, Any]:
    principal = getattr(request.state, "principal", None)
    by = getattr(principal, "subject", None) or "anonymous"
    try:
        step = answer_run(svc.runs, run_id, body.node, body.choice, body.values, by=by, tenant_id=tenant)
    except ResumeRefused as exc:
        if exc.status == 404:
            raise not_found("run", run_id) from None
        path = "choice" if "choice" in str(exc) and exc.status == 422 else "node"
        raise ApiError(exc.status, str(exc), [{"path": path, "message": str(exc)}] if exc.status == 422 else None) from None
    svc.dispatcher.bus.publish(run_id, "step", step)
    svc.dispatcher.submit(run_id)  # the run advances from its checkpoint with the answer
    return {"run_id": run_id, "status": "resumed", "node": body.node, "choice": body.choice}


# ---------------------------------------------------------------- live events


@router.get("/runs/{run_id}/events", responses={
    200: {"content": {"text/event-stream": {}}, "description": (
        "Server-Sent Events. `step` (a step record, as it starts and as it ends), `token` "
        "({node_id, delta}), then one `end` (the run record with its final state).")},
    **ERRORS}, response_class=EventSourceResponse, summary="Follow a run live (SSE)")
async def run_events(run_id: str, svc: ServicesDep, tenant: TenantDep, request: Request) -> EventSourceResponse:
    # Registered with the process's hub (api/run_events.py: one subscriber for every stream)
    # before the stored run is read, so nothing falls between the two.
    watch = await hub_of(request.app, svc).watch(run_id)
    try:
        record = await anyio.to_thread.run_sync(partial(svc.runs.get, run_id, tenant))
    except BaseException:
        watch.close()
        raise
    if record is None:
        watch.close()
        raise not_found("run", run_id)
    # background: the watch is dropped even when the client left before the stream began
    return EventSourceResponse(_stream(svc, watch, run_id, record), ping=PING_SECONDS, sep=SSE_SEP,
                               headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
                               background=BackgroundTask(watch.close))


def _event(kind: str, data: Any) -> bytes:
    return frame(kind, data)


class _StepDedup:
    """Replayed and live step events overlap; send each (step, status) once and never
    send `running` for a step whose end was already sent."""

    def __init__(self) -> None:
        self.sent: dict[tuple, str] = {}

    def admit(self, step: dict) -> bool:
        key = (step.get("node_id"), step.get("attempt"), _same_instant(step.get("started_at")))
        status = step.get("status")
        previous = self.sent.get(key)
        if previous == status or (previous is not None and previous != "running" and status == "running"):
            return False
        self.sent[key] = status
        return True


def _same_instant(value: Any) -> Any:
    """Live events carry '...+00:00' timestamps, SQLite reads give naive UTC ones."""
    if not isinstance(value, str):
        return value
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        return value
    return (at if at.tzinfo else at.replace(tzinfo=timezone.utc)).timestamp()


def _waiting(run_id: str, waiting_for: Any) -> bytes:
    return _event("waiting", {"run_id": run_id, "status": "waiting", "waiting_for": waiting_for})


async def _stream(svc: Services, watch: Watch, run_id: str, record: dict) -> AsyncIterator[bytes]:
    dedup = _StepDedup()
    try:
        for step in record.get("steps") or []:
            if dedup.admit(step):
                yield _event("step", step)
        if record.get("status") in TERMINAL:
            yield _event("end", record)
            return
        told_waiting = record.get("status") == "waiting"  # it paused before this stream began
        if told_waiting:
            yield _waiting(run_id, record.get("waiting_for"))
        while True:
            live = await watch.get()
            kind = live.kind
            if kind == RESYNC:
                # events were dropped (this client was slow, or Redis reconnected): the
                # stored steps stand in for them, and a stored end ends the stream
                current = await anyio.to_thread.run_sync(svc.runs.get, run_id) or record
                for step in current.get("steps") or []:
                    if dedup.admit(step):
                        yield _event("step", step)
                if current.get("status") in TERMINAL:
                    yield _event("end", current)
                    return
                if current.get("status") == "waiting" and not told_waiting:
                    told_waiting = True
                    yield _waiting(run_id, current.get("waiting_for"))
                continue
            if kind == "end":
                if not isinstance(live.data, dict):  # the run is gone from the store
                    yield _event("end", record)
                    return
                for step, step_frame in live.step_frames():
                    if dedup.admit(step):
                        yield step_frame
                yield live.frame()
                return
            if live.synthetic and kind == "waiting" and told_waiting:
                continue  # the status check's pause this stream has already sent
            told_waiting = kind == "waiting" or (told_waiting and kind != "step")
            if kind != "step" or dedup.admit(live.data):
                yield live.frame()
    except Exception as exc:  # the stream has started: report in-band, then close
        reason = db_reason(exc) if "sqlalchemy" in type(exc).__module__ else type(exc).__name__
        log.warning("event stream of run %s stopped: %s", run_id, reason)
        yield _event("error", {"detail": f"event stream stopped: {reason}", "errors": []})
    finally:
        watch.close()
