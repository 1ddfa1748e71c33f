"""The run driver: walks one run's graph, resuming from its last checkpoint.

A redelivered driver (its worker died) finds the LangGraph checkpoint of the run and
continues after the last finished superstep; node tasks it dispatches again get the same
task id and step key, so a step that already finished is reused, not paid twice.
"""

from __future__ import annotations

import logging
import socket

from celery.exceptions import Retry

from ..graph.build import compile_spec
from ..graph.runtime import CONFIG_KEY, RunContext
from ..graph.step import StepFailed, describe
from ..graph.validate import parse_valid, spec_hash
from ..runs.embedded import RECURSION_LIMIT, state_from_input
from ..runs import telemetry
from ..runs.observer import RecordingObserver, RunCancelled
from . import resources
from .app import celery_app
from .infra import transient
from .lease import Lease
from .node_dispatch import NodeDispatcher

log = logging.getLogger(__name__)
LOCK_TTL = 15  # seconds; the lease is renewed every LOCK_TTL/3 while the driver lives


@celery_app.task(name="agentflow.run", bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=None)
def run_workflow(self, run_id: str) -> str:
    lease = Lease(resources.redis_client(), f"af:run-lock:{run_id}", LOCK_TTL,
                  on_renew=lambda: resources.store().heartbeat(run_id))
    if not lease.acquire():
        # Another driver holds this run. Check again later: if that one died, its lock
        # expires and this delivery takes over.
        remaining = resources.redis_client().ttl(lease.key)
        raise self.retry(countdown=max(1, remaining if remaining and remaining > 0 else 1), max_retries=None)
    with lease:
        try:
            return _drive(run_id, self.request.hostname or socket.gethostname())
        except Exception as exc:
            if not transient(exc):
                raise
            log.warning("run %s interrupted by %s; it resumes from its checkpoint", run_id, describe(exc)[:200])
    # The lease is released: the next delivery resumes after the last finished superstep.
    # If even this retry cannot be sent (the broker is down), the run keeps its stale
    # heartbeat and the reaper (schedule_task.reap) re-enqueues it.
    raise self.retry(countdown=2, max_retries=None)


def _drive(run_id: str, worker: str) -> str:
    store, bus = resources.store(), resources.bus()
    begun = store.begin(run_id)  # queued/running -> running, and what the run needs
    if begun is None:
        status = store.status(run_id)
        if status is None:
            log.warning("run %s does not exist; dropping", run_id)
        return status or "missing"
    spec = parse_valid(begun["spec"])
    options, rerun_from = begun["options"], begun["rerun_from"]
    saver = resources.checkpointer()
    # only a driver that began the run writes its checkpoints: a first attempt has none
    resumed = begun["attempts"] > 1 and saver.get_tuple({"configurable": {"thread_id": run_id}}) is not None
    # checkpoints are written after the supersteps whose remote nodes finished (checkpoints.py)
    saver.track(run_id, fresh=not resumed)
    trace = telemetry.run_scope(run_id, options, spec.id, begun["tenant_id"])
    observer = trace.observe(RecordingObserver(store, bus, queue_of=lambda _n: "runs", worker=worker))
    dispatch = NodeDispatcher(run_id, spec, spec_hash(begun["spec"]), bool(options.get("stream")),
                              first_attempt=begun["attempts"] == 1, tenant_id=begun["tenant_id"],
                              on_done=lambda step: saver.remote_done(run_id, step), traceparent=trace.traceparent)
    ctx = RunContext(run_id=run_id, observer=observer, limiter=resources.limiter(), tenant_id=begun["tenant_id"],
                     dispatch=dispatch, resume=dispatch.recall,
                     extra={"stream": True} if options.get("stream") else {})
    # a re-run starts at its chosen node; its input is the state at that point
    graph = compile_spec(spec, saver, start=rerun_from)
    config = {"configurable": {CONFIG_KEY: ctx, "thread_id": run_id}, "recursion_limit": RECURSION_LIMIT}
    try:
        try:
            out = graph.invoke(None if resumed else state_from_input(begun["input"]), config=config)
            # the values a fresh run ends with; a resumed one may have had nothing left to run
            final = dict(out) if isinstance(out, dict) and not resumed else \
                dict(graph.get_state({"configurable": {"thread_id": run_id}}).values)
        finally:
            saver.discard(run_id)  # task writes no checkpoint followed: nothing resumes from them now
    except RunCancelled:
        store.finish(run_id, "cancelled", error="cancelled by request")
    except StepFailed as exc:
        store.finish(run_id, "failed", error=str(exc))
    except Retry:
        raise
    except Exception as exc:
        if transient(exc):
            raise  # retried by run_workflow, not failed
        log.exception("run %s crashed", run_id)
        store.finish(run_id, "failed", error=describe(exc))
    else:
        store.finish(run_id, "succeeded", state=final)
    record = store.get(run_id) or {}
    trace.end(record.get("status"), record.get("error"))
    bus.publish(run_id, "end", record)
    _run_ended({**record, "tenant_id": begun["tenant_id"]} if record else record)
    return record.get("status", "unknown")


def _run_ended(record: dict) -> None:
    """Metrics and outbound webhooks (agentflow.webhooks.deliver tasks); never fails the run.
    The record carries the run's tenant, so the webhooks are found without reading it again."""
    from ..runs.embedded import run_ended
    from ..runs.webhooks import celery_notifier

    run_ended(record, [celery_notifier(resources.store().factory)])
