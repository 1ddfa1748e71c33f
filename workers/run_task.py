"""The run driver: advances one run from its last checkpoint until it ends or must wait.

A run advances by events, never by waiting. Each delivery of `agentflow.run` takes the run's
lease, runs the graph until it needs something from outside (a remote step, a person, child
runs), records what it waits for, sends what must be sent, and returns. Whatever it waited
for wakes it again (workers/wake.py). A delivery that finds the lease taken returns at once:
the holder sees the news flag when it stops and advances again. So no task ever blocks on
another, and any worker layout (one process, `--concurrency 1`) finishes every run.
"""

from __future__ import annotations

import logging
import socket

from ..graph.runtime import RunContext
from ..graph.step import describe
from ..graph.spec import spec_hash
from ..graph.validate import parse_valid
from ..runs.advance import advance
from ..runs.children import QueuedChildRuns, parent_to_wake
from ..runs import telemetry
from ..runs.observer import RecordingObserver
from ..runs.people import StorePeople
from ..store.runs import TERMINAL, advance_fence
from . import keys, resources
from .checkpoints import Superseded
from .app import RUN_QUEUE, celery_app
from .delayed import send_later
from .infra import transient
from .lease import KEPT, LOST, Lease
from .node_dispatch import NodeDispatcher
from .wake import NEWS_TTL, wake

log = logging.getLogger(__name__)
LOCK_TTL = 15  # seconds; the lease is renewed every LOCK_TTL/3 while the driver lives
MAX_ROUNDS = 1000  # advances of one run in one delivery before it yields to other runs


# ignore_result: the run's outcome is its row in the store; a Celery result nobody reads
# would cost two Redis writes a delivery and a key kept for a day per message
@celery_app.task(name="agentflow.run", bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=None,
                 ignore_result=True)
def run_workflow(self, run_id: str) -> str:
    client = resources.redis_client()
    news = keys.run_news(run_id)
    lease = Lease(client, keys.run_lock(run_id), LOCK_TTL, on_renew=lambda: resources.store().heartbeat(run_id))
    # Held by another driver: it advances again when it sees the news this sets; if that
    # holder is dead, the recovery sweep finds news on a run nobody advances and wakes it.
    if not lease.acquire_or_flag(news, NEWS_TTL):
        return "busy"
    status, held = "unknown", True
    try:
        for _ in range(MAX_ROUNDS):
            status = _advance(run_id, self.request.hostname or socket.gethostname())
            if status in TERMINAL or status == "missing":
                break
            # news that came while it advanced: go on; none: let go in the same step, so news
            # that comes after finds no holder and its waker sends a driver message
            let_go = lease.release_unless(news)
            if let_go != KEPT:
                held = False
                if let_go == LOST and client.exists(news):
                    wake(client, celery_app, run_id)  # another owner took it meanwhile
                break
    except Superseded:
        # this driver was cut off (its lease lapsed) and another has begun the run since
        log.warning("run %s: advanced by a newer driver meanwhile; this one's checkpoint was not written", run_id)
        status = "superseded"
    except Exception as exc:
        if not transient(exc):
            raise
        log.warning("run %s interrupted by %s; it resumes from its checkpoint", run_id, describe(exc)[:200])
        status = "retry"
    finally:
        if held:
            lease.release()
    if status == "retry":
        # If even this retry cannot be sent (the broker is down), the recovery sweep wakes it.
        raise self.retry(countdown=2, max_retries=None)
    if held and status not in (*TERMINAL, "missing", "superseded") and client.exists(news):
        wake(client, celery_app, run_id)  # MAX_ROUNDS spent with news left: another delivery goes on
    return status


def _advance(run_id: str, worker: str) -> str:
    store, bus = resources.store(), resources.bus()
    begun = store.begin(run_id)  # queued/running/waiting -> running, and what the run needs
    if begun is None:
        status = store.status(run_id)
        if status is None:
            log.warning("run %s does not exist; dropping", run_id)
        return status or "missing"
    spec = parse_valid(begun["spec"])
    options = begun["options"]
    saver = resources.checkpointer()
    # a first advance has no checkpoint; a later one without any (its driver died before the
    # first pause) starts over from the input, reading finished steps back by key
    loaded = saver.get_tuple({"configurable": {"thread_id": run_id}}) if begun["attempts"] > 1 else None
    resumed = loaded is not None
    # LangGraph's own first read reuses `loaded`; the checkpoint is written only while no
    # newer driver has begun the run (this one may have been cut off meanwhile)
    saver.track(run_id, fresh=not resumed, loaded=loaded, fence=advance_fence(run_id, begun["attempts"]))
    trace = telemetry.run_scope(run_id, options, spec.id, begun["tenant_id"], begun.get("started_at"))
    observer = trace.observe(RecordingObserver(store, bus, queue_of=lambda _n: RUN_QUEUE, worker=worker))
    dispatch = NodeDispatcher(run_id, spec, spec_hash(begun["spec"]), bool(options.get("stream")),
                              first_attempt=begun["attempts"] == 1, tenant_id=begun["tenant_id"],
                              traceparent=trace.traceparent)
    ctx = RunContext(run_id=run_id, observer=observer, limiter=resources.limiter(), tenant_id=begun["tenant_id"],
                     dispatch=dispatch, resume=dispatch.recall,
                     people=StorePeople(store, bus, wake_at=lambda rid, at: _wake_at(rid, at)),
                     # a child run is a run of its own: queued here, its end wakes this one
                     children=QueuedChildRuns(store, lambda rid: wake(resources.redis_client(), celery_app, rid)),
                     extra={"stream": True} if options.get("stream") else {})
    status = "unknown"
    try:
        status = advance(store, bus, spec, run_id, ctx, run_input=None if resumed else begun["input"],
                         tenant_id=begun["tenant_id"], checkpointer=saver, start=begun["rerun_from"],
                         listeners=[*_listeners(), lambda rec: trace.end(rec.get("status"), rec.get("error"))],
                         reraise=lambda exc: transient(exc) or isinstance(exc, Superseded),
                         attempts=begun["attempts"])
    finally:
        if status in TERMINAL:
            saver.discard(run_id)  # nothing resumes an ended run
        else:
            saver.flush(run_id, keep=False)  # the pause point (or a crash): one checkpoint write
    return status


def _wake_at(run_id: str, when: float) -> None:
    """A human node's deadline: a delayed driver message (it holds no worker meanwhile)."""
    send_later(resources.redis_client(), "agentflow.run", [run_id], RUN_QUEUE, when)


def _listeners() -> list:
    """Outbound webhooks (agentflow.webhooks.deliver tasks), and the parent of a child run
    woken when its last child of a step ends; never fail the run."""
    from .webhook_task import celery_notifier

    return [celery_notifier(resources.store().factory), _wake_parent]


def _wake_parent(record: dict) -> None:
    if not record.get("parent_run_id"):
        return  # not a child run: nothing to look up
    parent = parent_to_wake(resources.store(), record.get("run_id"))
    if parent is not None:
        wake(resources.redis_client(), celery_app, parent)
