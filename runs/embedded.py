"""Embedded executor: runs a workflow in this process (no Redis, no Celery).

The run row and its steps go to the store exactly as in distributed mode, so the API,
Studio and `agentflow run` see the same records either way.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from ..graph.build import compile_spec
from ..graph.runtime import CONFIG_KEY, RunContext
from ..graph.state import initial_state
from ..graph.step import StepFailed, describe
from ..graph.validate import parse_valid
from ..store.runs import RunStore
from .events import EventBus, MemoryEventBus
from . import telemetry
from .observer import RecordingObserver, RunCancelled

log = logging.getLogger(__name__)
RECURSION_LIMIT = 200


def state_from_input(run_input: dict[str, Any]) -> dict[str, Any]:
    """`{"user_input": ..., "metadata": {...}, <other state fields>}` -> the initial GraphState."""
    run_input = dict(run_input or {})
    return initial_state(run_input.pop("user_input", ""), run_input.pop("metadata", None), **run_input)


def invoke(spec, state: dict, ctx: RunContext, checkpointer=None, thread_id: str | None = None,
           start: str | None = None) -> dict:
    graph = compile_spec(spec, checkpointer, start=start)
    config: dict[str, Any] = {"configurable": {CONFIG_KEY: ctx}, "recursion_limit": RECURSION_LIMIT}
    if thread_id is not None:
        config["configurable"]["thread_id"] = thread_id
    return dict(graph.invoke(state, config=config))


def run_ended(record: dict, listeners=()) -> None:
    """Count the run and tell the listeners; a failing listener never fails the run."""
    try:
        from ..api.metrics import observe_run

        observe_run(record)
    except Exception:
        log.debug("run metrics not recorded", exc_info=True)
    for listener in listeners:
        try:
            listener(record)
        except Exception:
            log.exception("run-end listener failed for run %s", record.get("run_id"))


class EmbeddedExecutor:
    def __init__(self, store: RunStore, bus: EventBus | None = None, limiter=None, workers: int = 4,
                 extra: dict | None = None):
        self.store = store
        self.bus = bus or MemoryEventBus()
        self.limiter = limiter
        self.extra = extra or {}
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="agentflow-run")
        # called with the run record when a run ends (outbound webhooks, metrics)
        self.listeners: list = []

    def submit(self, run_id: str) -> Future:
        return self.pool.submit(self.execute, run_id)

    def execute(self, run_id: str, observer=None) -> dict:
        """Run a stored run to its end; returns the run record (never raises for a failing run)."""
        begun = self.store.begin(run_id)
        if begun is None:
            record = self.store.get(run_id)
            if record is None:
                raise KeyError(run_id)
            return record
        spec = parse_valid(begun["spec"])
        run_input, rerun_from = begun["input"], begun["rerun_from"]
        queue_of = {n.id: n.queue for n in spec.nodes}.get
        trace = telemetry.run_scope(run_id, begun["options"], spec.id, begun["tenant_id"])
        obs = trace.observe(observer or RecordingObserver(self.store, self.bus, queue_of=queue_of))
        extra = dict(self.extra)
        if begun["options"].get("stream"):
            extra["stream"] = True
        ctx = RunContext(run_id=run_id, observer=obs, limiter=self.limiter, extra=extra,
                         tenant_id=begun["tenant_id"])
        try:
            # a re-run starts at its chosen node, its input being the state at that point
            final = invoke(spec, state_from_input(run_input), ctx, start=rerun_from)
        except RunCancelled:
            self.store.finish(run_id, "cancelled", error="cancelled by request")
        except StepFailed as exc:
            self.store.finish(run_id, "failed", error=str(exc))
        except Exception as exc:  # a bug or an unexpected library error: record it, keep serving
            log.exception("run %s crashed", run_id)
            self.store.finish(run_id, "failed", error=describe(exc))
        else:
            self.store.finish(run_id, "succeeded", state=final)
        record = self.store.get(run_id) or {}
        trace.end(record.get("status"), record.get("error"))
        self.bus.publish(run_id, "end", record)
        run_ended(record, self.listeners)
        return record

    def shutdown(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
