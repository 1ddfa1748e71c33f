"""Node tasks: one node's call to the outside world, on its node type's queue.

Rate limits are global (Redis); a task that may not go yet is retried with the countdown
the limiter computed, so no worker sleeps in a slot. A redelivered task whose step
already succeeded returns the stored output instead of calling the provider again.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections import OrderedDict
from functools import lru_cache

from celery.exceptions import Retry

from ..graph.errors import RateLimitExceeded
from ..graph.nodes import make_node
from ..graph.runtime import RunContext
from ..graph.step import StepFailed, describe, queue_plan, run_step
from ..graph.validate import parse_valid
from ..ratelimit.base import LimiterUnavailable
from ..runs import telemetry
from ..runs.observer import RecordingObserver, RunCancelled
from . import resources
from .app import celery_app
from .infra import transient
from .lease import Lease

log = logging.getLogger(__name__)
HOST = socket.gethostname()
STEP_LEASE = 15


_impls: "OrderedDict[tuple[str, str], tuple]" = OrderedDict()
_impls_lock = threading.Lock()


def _impl(run_id: str, node_id: str, spec_hash: str | None = None):
    """(spec, node implementation), shared by every run of the same spec: the driver sends
    the spec's hash, so a new run costs no store read here (older messages name the run)."""
    cache_key = (spec_hash or f"run:{run_id}", node_id)
    with _impls_lock:
        hit = _impls.get(cache_key)
        if hit is not None:
            _impls.move_to_end(cache_key)
            return hit
    loaded = resources.store().spec_of(run_id)
    if loaded is None:
        raise LookupError(f"run {run_id} not found")
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


@celery_app.task(name="agentflow.node", bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=None)
def run_node(self, run_id: str, node_id: str, key: str, state: dict, meta: dict | None = None) -> dict:
    """`meta`: {"spec_hash", "stream", "tenant_id"} from the driver."""
    try:
        return _run_node(self, run_id, node_id, key, state, meta or {})
    except Retry:
        raise
    except Exception as exc:
        if not transient(exc):
            raise
        # The database or Redis blinked (before the provider was called, or while recording
        # its answer, which the store retries first): try again by step key, which reuses a
        # recorded success. A crash here would fail the whole run for an infrastructure blip.
        log.warning("step %s interrupted by %s; retrying", key, describe(exc)[:200])
        raise self.retry(countdown=1.0, max_retries=None)


def _run_node(self, run_id: str, node_id: str, key: str, state: dict, meta: dict) -> dict:
    # Only one live execution of a step, even if the broker delivers it twice; the lease
    # of a killed worker expires within STEP_LEASE seconds. Taken before the rate-limit
    # grant, so a grant is never taken for an execution that cannot go ahead.
    lease = Lease(resources.redis_client(), f"af:step-lock:{key}", STEP_LEASE)
    if not lease.acquire():
        raise self.retry(countdown=1.0, max_retries=None)
    try:
        return _holding_lease(self, run_id, node_id, key, state, meta)
    finally:
        lease.release()


def _holding_lease(self, run_id, node_id, key, state, meta) -> dict:
    # Checked under the lease: a duplicate delivery may have finished the step already,
    # and nobody else can start it now (else it would be paid twice).
    store = resources.store()
    status, done = store.step_check(run_id, key)
    if done is not None:
        return {"ok": True, "update": done, "reused": True}
    if status == "cancelled":
        return {"ok": False, "cancelled": True, "error": "run was cancelled"}
    spec, impl = _impl(run_id, node_id, meta.get("spec_hash"))

    limiter = resources.limiter()
    plan = queue_plan(spec, impl.node, state, meta.get("tenant_id"))
    decision = None
    if plan is not None:
        limits, sub = plan
        tokens = impl.estimate_tokens(state) if limits.max_tokens_per_minute else 0
        try:
            decision = limiter.try_acquire(limits, sub, tokens, waiter=key)
        except LimiterUnavailable as exc:  # Redis blinked: nothing was granted, try again soon
            raise self.retry(countdown=1.0, max_retries=None, exc=exc)
        except RateLimitExceeded as exc:  # larger than the whole budget: waiting cannot help
            return {"ok": False, "error": str(exc)}  # the driver's StepFailed names the node
        if not decision.allowed:
            # the limiter says when this task's turn comes; no worker sleeps holding a slot
            raise self.retry(countdown=max(decision.retry_after, 0.01), max_retries=None)

    queue = (self.request.delivery_info or {}).get("routing_key")
    observer = telemetry.observe(RecordingObserver(store, resources.bus(), queue_of=lambda _n: queue,
                                                   worker=self.request.hostname or HOST, step_key=key),
                                 meta.get("traceparent"))
    # LLM tokens go out on the Redis bus
    stream = bool(meta["stream"] if "stream" in meta else _options_for(run_id).get("stream"))
    # the node's own grant was taken above; calls inside the step (an llm node's tool
    # calls) are charged through queue_limiter (graph/nodes/tool.py)
    ctx = RunContext(run_id=run_id, observer=observer, limiter=None, tenant_id=meta.get("tenant_id"),
                     extra={"stream": True, "queue_limiter": limiter} if stream else {"queue_limiter": limiter})
    update: dict = {}
    try:
        update = run_step(spec, impl, state, ctx)
        return {"ok": True, "update": update}
    except RunCancelled:
        return {"ok": False, "cancelled": True, "error": "run was cancelled"}
    except StepFailed as exc:
        # the reason alone: the driver raises StepFailed(node_id, reason), which names the node
        return {"ok": False, "error": exc.reason, "retryable": exc.retryable}
    finally:
        if decision is not None and plan is not None:
            # settle the token reservation with what was really spent (0 on failure)
            limiter.settle(plan[0], decision, int(update.get("tokens_used") or 0))
