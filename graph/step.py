"""One node execution: limits, timing, observer events and a readable error.

Shared by the embedded executor (inside the LangGraph node function) and by the Celery
node tasks of the distributed mode, so both record steps the same way.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

from langgraph.errors import GraphBubbleUp

from .errors import RateLimitExceeded, StepError
from .runtime import RunContext
from .secrets import redact
from .templates import render


class StepFailed(RuntimeError):
    """A node failed; the message names the node and says why, secrets removed."""

    def __init__(self, node_id: str, message: str, retryable: bool = False):
        super().__init__(f"node {node_id!r} failed: {message}")
        self.node_id = node_id
        self.reason = message
        self.retryable = retryable


def describe(exc: BaseException) -> str:
    # errors that say whether retrying helps are written for the reader: StepError, and
    # the limiter's own (agentflow.ratelimit.LimitError, which graph/ does not import)
    if isinstance(exc, StepError) or isinstance(getattr(type(exc), "retryable", None), bool):
        return redact(str(exc))
    text = str(exc) or exc.__class__.__name__
    return redact(f"{exc.__class__.__name__}: {text}")


def step_key(run_id: str, node_id: str, superstep: int) -> str:
    """A step's identity across redeliveries and resumes: a finished step is read back by it,
    never paid twice (LangGraph's superstep number is stable across resumes)."""
    return f"{run_id}:{node_id}:{superstep}"


DEFAULT_TENANT = "default"  # = store.models.DEFAULT_TENANT (graph/ may not import the store)


def limit_namespace(workflow_id: str, tenant_id: str | None = None) -> str:
    """What a workflow's queue budgets are scoped to: the workflow id, under its tenant's id
    for any tenant but the default one. So two tenants' workflows that share an id share
    no budget. ("/" cannot occur in a workflow id.)"""
    return workflow_id if tenant_id in (None, DEFAULT_TENANT) else f"{tenant_id}/{workflow_id}"


@dataclass(frozen=True, eq=False)
class QueueCharge:
    """What a node's calls are charged to: its spec queue, under an id scoped by
    `limit_namespace`. The limiter (agentflow.ratelimit, which graph/ does not import)
    reads it as its QueueLimits (`QueueLimits.of`)."""

    id: str
    queue: Any  # graph.spec.Queue

    @classmethod
    def of(cls, queue, namespace: str = "") -> "QueueCharge":
        return cls(f"{namespace}:{queue.id}" if namespace else queue.id, queue)

    @property
    def max_tokens_per_minute(self) -> int | None:
        return self.queue.max_tokens_per_minute


def queue_plan(spec, node, state: dict, tenant_id: str | None = None) -> tuple[QueueCharge, str | None] | None:
    """The queue limits and sub-queue a node's call is charged to, if any."""
    queue = spec.queue(node.queue)
    if queue is None:
        return None
    subs = {s.id for s in queue.sub_queues}
    wanted = node.sub_queue or ((state.get("metadata") or {}).get("sub_queue"))
    sub = wanted if wanted in subs else (queue.sub_queues[0].id if queue.sub_queues and wanted is None else None)
    if wanted is not None and wanted not in subs:
        sub = None  # unknown sub-queue in metadata: charge the queue, not a sub-queue
    return QueueCharge.of(queue, namespace=limit_namespace(spec.id, tenant_id)), sub


def concurrency_key(spec, node, state: dict) -> str | None:
    """The key a node's max_concurrency slot is counted under: its queue's concurrency_key
    template rendered over the state (None: the cap holds for the whole queue). Rendered
    here and passed to the limiter as plain text (ratelimit/ knows no templates)."""
    queue = spec.queue(node.queue)
    if queue is None or not queue.max_concurrency or not queue.concurrency_key:
        return None
    return render(queue.concurrency_key, state)


def run_step(spec, impl, state: dict, ctx: RunContext, attempt: int = 1,
             step_key: str | None = None) -> dict[str, Any]:
    """`step_key`: recorded with the step (a distributed driver's own node: see RunContext.resume)."""
    node = impl.node
    extra: dict[str, Any] = {"step_key": step_key} if step_key is not None else {}
    if getattr(ctx.observer, "records_input", False):
        # the state the node reads, kept for the run's trace (GET /runs/{id}/trace)
        ctx.observer.step_started(ctx.run_id, node.id, node.type, attempt, input=dict(state), **extra)
    else:
        ctx.observer.step_started(ctx.run_id, node.id, node.type, attempt, **extra)
    started = time.perf_counter()
    plan = queue_plan(spec, node, state, ctx.tenant_id) if ctx.limiter is not None else None
    decision = None  # the limiter's Decision
    try:
        if plan is not None:
            limits, sub = plan
            tokens = impl.estimate_tokens(state) if limits.max_tokens_per_minute else 0
            decision = ctx.limiter.acquire(limits, sub, tokens, timeout=ctx.max_limit_wait,
                                           concurrency_key=concurrency_key(spec, node, state))
            if not decision.allowed:
                raise RateLimitExceeded(f"queue {node.queue!r} gave no slot within {ctx.max_limit_wait:.0f} s")
        # a granted concurrency slot stays leased while the step runs (ratelimit/base.holding)
        with ctx.limiter.holding(plan[0], decision) if decision is not None else nullcontext():
            update = (impl(state, ctx, step_key=step_key) if impl.keyed else impl(state, ctx)) or {}
        if decision is not None and plan is not None:
            ctx.limiter.settle(plan[0], decision, int(update.get("tokens_used") or 0))
    except GraphBubbleUp:
        # the node pauses the run (RunContext.wait: child runs still going): not a failure
        if decision is not None and plan is not None:
            ctx.limiter.settle(plan[0], decision, 0)
        paused = getattr(ctx.observer, "step_paused", None)
        if paused is not None:
            paused(ctx.run_id, node.id, duration_ms=(time.perf_counter() - started) * 1000)
        raise
    except Exception as exc:
        if decision is not None and plan is not None:
            ctx.limiter.settle(plan[0], decision, 0)
        message = describe(exc)
        ctx.observer.step_failed(ctx.run_id, node.id, error=message,
                                 duration_ms=(time.perf_counter() - started) * 1000)
        raise StepFailed(node.id, message, getattr(exc, "retryable", False)) from exc
    ctx.observer.step_finished(ctx.run_id, node.id, update=update,
                               tokens=int(update.get("tokens_used") or 0),
                               cost=float(update.get("cost") or 0.0),
                               duration_ms=(time.perf_counter() - started) * 1000)
    return update
