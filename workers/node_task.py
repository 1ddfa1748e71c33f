"""Node tasks: one node's call to the outside world, on its node type's queue.

The task records the step (keyed `run:node:superstep`) and wakes its run; it never waits
for anything. A task that may not go yet (rate limits) is put back as a delayed message with
the wait the limiter computed (workers/delayed.py), so no worker holds it. A redelivered
task whose step already ended only wakes the run; one whose step another live worker is
executing (its lease) is dropped: that worker wakes the run when it finishes.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from contextlib import nullcontext
from collections import OrderedDict
from functools import lru_cache

from celery.exceptions import Retry

from ..graph import resilience
from ..graph.errors import StepError
from ..graph.nodes import make_node
from ..graph.runtime import RunContext
from ..graph.step import StepFailed, concurrency_key, describe, queue_plan, run_step
from ..graph.validate import parse_valid
from ..ratelimit.base import LimiterUnavailable, RateLimitExceeded
from ..runs import telemetry
from ..runs.observer import RecordingObserver, RunCancelled
from ..store.runs import StepDone
from . import keys, resources
from .app import celery_app
from .delayed import send_later
from .infra import transient
from .lease import Lease
from .wake import wake

log = logging.getLogger(__name__)
HOST = socket.gethostname()
STEP_LEASE = 15  # seconds; renewed every STEP_LEASE/3 while the step runs
# A denied step is sent back to come again GRANT_LEAD s before its turn, and waits the
# rest (at most GRANT_WAIT s) in its slot: a delayed message arrives tens of ms late on a
# busy fleet, and a grant that late restarts the queue's schedule (that time is lost for
# good). A short wait in the slot costs GRANT_LEAD slot-seconds a grant at most.
GRANT_LEAD = 0.1
GRANT_WAIT = 0.2


_impls: "OrderedDict[tuple[str, str], tuple]" = OrderedDict()
_impls_lock = threading.Lock()


def _impl(run_id: str, node_id: str, spec_hash: str | None = None):
    """(spec, node implementation), shared by every run of the same spec: the driver sends
    the spec's hash, so a new run costs no store read here (older messages name the run).
    None when it is not cached and the run no longer exists (deleted)."""
    cache_key = (spec_hash or f"run:{run_id}", node_id)
    with _impls_lock:
        hit = _impls.get(cache_key)
        if hit is not None:
            _impls.move_to_end(cache_key)
            return hit
    loaded = resources.store().spec_of(run_id)
    if loaded is None:
        return None
    spec = parse_valid(loaded[0])
    hit = (spec, make_node(spec.node(node_id), spec))
    with _impls_lock:
        _impls[cache_key] = hit
        while len(_impls) > 1024:
            _impls.popitem(last=False)
    return hit


def clear_caches() -> None:
    with _impls_lock:
        _impls.clear()
    _options_for.cache_clear()


@lru_cache(maxsize=256)
def _options_for(run_id: str) -> dict:
    return resources.store().run_options(run_id)[0]


# ignore_result: the step's outcome is its row in the store (the driver reads it by key)
@celery_app.task(name="agentflow.node", bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=None,
                 ignore_result=True)
def run_node(self, run_id: str, node_id: str, key: str, state: dict, meta: dict | None = None) -> dict:
    """`meta`: {"spec_hash", "stream", "tenant_id"} from the driver."""
    try:
        return _run_node(self, run_id, node_id, key, state, meta or {})
    except Retry:
        raise
    except Exception as exc:
        if not transient(exc):
            # A bug or a broken spec: the step fails readably and the run learns of it,
            # instead of waiting for a step that will never end.
            log.exception("step %s crashed", key)
            try:
                spec_node = resources.store().spec_of(run_id)
                node_type = next((n.get("type", "?") for n in (spec_node[0] if spec_node else {}).get("nodes", [])
                                  if n.get("id") == node_id), "?")
                _record_failure(resources.store(), run_id, _Named(node_id, node_type), key,
                                f"node task crashed: {describe(exc)}", self.request)
            finally:
                wake(resources.redis_client(), celery_app, run_id)
            return {"ok": False, "error": describe(exc)}
        # The database or Redis blinked (before the provider was called, or while recording
        # its answer, which the store retries first): try again by step key, which reuses a
        # recorded success. A crash here would fail the whole run for an infrastructure blip.
        log.warning("step %s interrupted by %s; retrying", key, describe(exc)[:200])
        raise self.retry(countdown=1.0, max_retries=None)


def _run_node(self, run_id: str, node_id: str, key: str, state: dict, meta: dict) -> dict:
    client = resources.redis_client()
    # Only one live execution of a step, even if the broker delivers it twice; the lease
    # of a killed worker expires within STEP_LEASE seconds. Taken before the rate-limit
    # grant, so a grant is never taken for an execution that cannot go ahead.
    lease = Lease(client, keys.step_lock(key), STEP_LEASE)
    if not lease.acquire():
        # Another delivery holds the step. If it lives, it wakes the run when done and this
        # copy, looked at again once that lease could have lapsed, finds the step ended; if
        # it died (a redelivered message of a killed worker), this copy runs the step then.
        left = client.pttl(keys.step_lock(key))
        send_later(client, "agentflow.node", [run_id, node_id, key, state], _queue_of(self.request),
                   time.time() + max(left, 0) / 1000 + 0.5, task_id=key, kwargs={"meta": _again(meta)})
        return {"ok": False, "duplicate": True}
    try:
        reply = _holding_lease(self, run_id, node_id, key, state, meta, client)
    finally:
        lease.release()
    if "delayed" in reply:
        # Put back only once the lease is let go: the pump may send it again at once, and a
        # delivery that found the lease still held would be dropped as a duplicate.
        send_later(client, "agentflow.node", [run_id, node_id, key, state], _queue_of(self.request),
                   time.time() + reply["delayed"], task_id=key, kwargs={"meta": _again(meta)})
    else:
        wake(client, celery_app, run_id)
    return reply


def _holding_lease(self, run_id, node_id, key, state, meta, client) -> dict:
    # Checked under the lease: a duplicate delivery may have finished the step already,
    # and nobody else can start it now (else it would be paid twice).
    store = resources.store()
    if not _first_delivery(self.request, meta):
        run_status, outcome, _output, error = store.step_outcome(run_id, key)
        if outcome is not None:
            return {"ok": outcome == "succeeded", "reused": True, "error": error}
        if run_status in (None, "cancelled"):
            return {"ok": False, "cancelled": True, "error": "run was cancelled"}
    # else nothing can have ended this step yet; a run cancelled (or deleted) meanwhile is
    # caught when the step starts (RunCancelled), and a success recorded meanwhile by StepDone
    found = _impl(run_id, node_id, meta.get("spec_hash"))
    if found is None:  # deleted with its spec, unless this worker knew the spec already
        return {"ok": False, "cancelled": True, "error": "run no longer exists"}
    spec, impl = found

    limiter = resources.limiter()
    plan = queue_plan(spec, impl.node, state, meta.get("tenant_id"))
    # everything the step needs is made before the grant, so the grant is taken as late as
    # possible: the call follows it at once, or it is given back (settle below)
    queue = _queue_of(self.request)
    recorder = RecordingObserver(store, resources.bus(), queue_of=lambda _n: queue,
                                 worker=self.request.hostname or HOST, step_key=key)
    observer = telemetry.observe(recorder, meta.get("traceparent"))
    # LLM tokens go out on the Redis bus
    stream = bool(meta["stream"] if "stream" in meta else _options_for(run_id).get("stream"))
    # the node's own grant is taken below; calls inside the step (an llm node's tool
    # calls) are charged through queue_limiter (graph/nodes/tool.py)
    ctx = RunContext(run_id=run_id, observer=observer, limiter=None, tenant_id=meta.get("tenant_id"),
                     extra={"stream": True, "queue_limiter": limiter} if stream else {"queue_limiter": limiter})
    decision = None
    if plan is not None:
        limits, sub = plan
        tokens = impl.estimate_tokens(state) if limits.max_tokens_per_minute else 0
        ckey = concurrency_key(spec, impl.node, state)
        try:
            decision = limiter.try_acquire(limits, sub, tokens, waiter=key, concurrency_key=ckey)
            if not decision.allowed and decision.reason != "concurrency" and decision.retry_after <= GRANT_WAIT:
                time.sleep(max(decision.retry_after, 0.0))  # its turn is this close: be there on time
                decision = limiter.try_acquire(limits, sub, tokens, waiter=key, concurrency_key=ckey)
        except LimiterUnavailable as exc:  # Redis blinked: nothing was granted, try again soon
            raise self.retry(countdown=1.0, max_retries=None, exc=exc)
        except RateLimitExceeded as exc:  # larger than the whole budget: waiting cannot help
            _record_failure(store, run_id, impl.node, key, str(exc), self.request)
            return {"ok": False, "error": str(exc)}
        if not decision.allowed:
            # the limiter says when this step's turn comes; it waits in Redis, not in a
            # worker, and comes back a little early (GRANT_LEAD) to be on time
            wait = decision.retry_after
            return {"ok": False, "delayed": max(wait - GRANT_LEAD if wait > GRANT_WAIT else wait, 0.01)}
    update: dict = {}

    def still_ours() -> None:
        # before a retry of a call to the outside: a worker cut off from the fleet (its
        # attempt closed as lost by the worker that took the step over) pays for no retry
        attempt = recorder.attempt_id(node_id)
        if attempt is not None and not store.attempt_running(attempt):
            raise StepError(f"step {key} was taken over by another worker; not retried here", node_id=node_id)

    fence = resilience.before_retry.set(still_ours)
    try:
        # a max_concurrency slot stays leased while the step runs
        with limiter.holding(plan[0], decision) if decision is not None else nullcontext():
            update = run_step(spec, impl, state, ctx)
        return {"ok": True}
    except StepDone:
        # an earlier attempt recorded its outcome (a worker cut off, then back; or a copy sent
        # again after Redis lost the step's marker): the run reads that outcome when woken
        return {"ok": True, "reused": True}
    except RunCancelled:
        return {"ok": False, "cancelled": True, "error": "run was cancelled"}
    except StepFailed as exc:
        return {"ok": False, "error": exc.reason, "retryable": exc.retryable}
    finally:
        resilience.before_retry.reset(fence)
        if decision is not None and plan is not None:
            # settle the token reservation with what was really spent (0 on failure)
            limiter.settle(plan[0], decision, int(update.get("tokens_used") or 0))


def _first_delivery(request, meta: dict) -> bool:
    """The step's first message (the driver found it never sent), delivered for the first
    time and not retried: no earlier attempt can have recorded an outcome."""
    return bool(meta.get("first")) and not request.retries and not (request.delivery_info or {}).get("redelivered")


def _again(meta: dict) -> dict:
    """The meta of a message sent again: another copy may have ended the step by then."""
    return {k: v for k, v in meta.items() if k != "first"}


class _Named:
    def __init__(self, id: str, type: str):
        self.id, self.type = id, type


def _queue_of(request) -> str:
    return (request.delivery_info or {}).get("routing_key") or "agentflow.api"


def _record_failure(store, run_id, node, key, message, request) -> None:
    """A step that fails before it starts still ends as a failed step row: the driver reads
    its outcome by key."""
    started = store.start_step(run_id, node.id, node.type, queue=_queue_of(request), worker=request.hostname or HOST,
                               step_key=key)
    if started is not None:
        store.end_step(started[0], status="failed", duration_ms=0.0, error=message)
