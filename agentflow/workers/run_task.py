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
from ..graph.validate import parse_valid
from ..runs.embedded import RECURSION_LIMIT, state_from_input
from ..runs.observer import RecordingObserver, RunCancelled
from ..store.runs import TERMINAL
from . import resources
from .app import celery_app
from .infra import transient
from .lease import Lease
from .node_dispatch import NodeDispatcher

log = logging.getLogger(__name__)
LOCK_TTL = 15  # seconds; the lease is renewed every LOCK_TTL/3 while the driver lives


@celery_app.task(name="agentflow.run", bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=None)
def run_workflow(self, run_id: str) -> str:
    store = resources.store()
    loaded = store.spec_of(run_id)
    if loaded is None:
        log.warning("run %s does not exist; dropping", run_id)
        return "missing"
    spec_data, run_input, status = loaded
    if status in TERMINAL:
        return status
    lease = Lease(resources.redis_client(), f"af:run-lock:{run_id}", LOCK_TTL,
                  on_renew=lambda: resources.store().heartbeat(run_id))
    if not lease.acquire():
        # Another driver holds this run. Check again later: if that one died, its lock
        # expires and this delivery takes over.
        remaining = resources.redis_client().ttl(lease.key)
        raise self.retry(countdown=max(1, remaining if remaining and remaining > 0 else 1), max_retries=None)
    with lease:
        try:
            return _drive(run_id, spec_data, run_input, self.request.hostname or socket.gethostname())
        except Exception as exc:
            if not transient(exc):
                raise
            log.warning("run %s interrupted by %s; it resumes from its checkpoint", run_id, describe(exc)[:200])
    # The lease is released: the next delivery resumes after the last finished superstep.
    # If even this retry cannot be sent (the broker is down), the run keeps its stale
    # heartbeat and the reaper (schedule_task.reap) re-enqueues it.
    raise self.retry(countdown=2, max_retries=None)


def _drive(run_id: str, spec_data: dict, run_input: dict, worker: str) -> str:
    store, bus = resources.store(), resources.bus()
    if not store.mark_running(run_id):
        return store.status(run_id) or "missing"
    spec = parse_valid(spec_data)
    observer = RecordingObserver(store, bus, queue_of=lambda _n: "runs", worker=worker)
    options, rerun_from = store.run_options(run_id)
    ctx = RunContext(run_id=run_id, observer=observer, limiter=resources.limiter(),
                     dispatch=NodeDispatcher(run_id, spec), extra={"stream": True} if options.get("stream") else {})
    saver = resources.checkpointer()
    # a re-run starts at its chosen node; its input is the state at that point
    graph = compile_spec(spec, saver, start=rerun_from)
    config = {"configurable": {CONFIG_KEY: ctx, "thread_id": run_id}, "recursion_limit": RECURSION_LIMIT}
    resumed = saver.get_tuple({"configurable": {"thread_id": run_id}}) is not None
    try:
        graph.invoke(None if resumed else state_from_input(run_input), config=config)
        final = dict(graph.get_state({"configurable": {"thread_id": run_id}}).values)
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
    bus.publish(run_id, "end", record)
    _run_ended(record)
    return record.get("status", "unknown")


def _run_ended(record: dict) -> None:
    """Metrics and outbound webhooks (agentflow.webhooks.deliver tasks); never fails the run."""
    from ..runs.embedded import run_ended
    from ..runs.webhooks import celery_notifier

    run_ended(record, [celery_notifier(resources.store().factory)])
