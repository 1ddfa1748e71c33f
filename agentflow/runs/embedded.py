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
from .observer import RecordingObserver, RunCancelled

log = logging.getLogger(__name__)
RECURSION_LIMIT = 200


def state_from_input(run_input: dict[str, Any]) -> dict[str, Any]:
    """`{"user_input": ..., "metadata": {...}, <other state fields>}` -> the initial GraphState."""
    run_input = dict(run_input or {})
    return initial_state(run_input.pop("user_input", ""), run_input.pop("metadata", None), **run_input)


def invoke(spec, state: dict, ctx: RunContext, checkpointer=None, thread_id: str | None = None) -> dict:
    graph = compile_spec(spec, checkpointer)
    config: dict[str, Any] = {"configurable": {CONFIG_KEY: ctx}, "recursion_limit": RECURSION_LIMIT}
    if thread_id is not None:
        config["configurable"]["thread_id"] = thread_id
    return dict(graph.invoke(state, config=config))


class EmbeddedExecutor:
    def __init__(self, store: RunStore, bus: EventBus | None = None, limiter=None, workers: int = 4,
                 extra: dict | None = None):
        self.store = store
        self.bus = bus or MemoryEventBus()
        self.limiter = limiter
        self.extra = extra or {}
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="agentflow-run")

    def submit(self, run_id: str) -> Future:
        return self.pool.submit(self.execute, run_id)

    def execute(self, run_id: str, observer=None) -> dict:
        """Run a stored run to its end; returns the run record (never raises for a failing run)."""
        loaded = self.store.spec_of(run_id)
        if loaded is None:
            raise KeyError(run_id)
        spec_data, run_input, _ = loaded
        if not self.store.mark_running(run_id):
            return self.store.get(run_id) or {}
        spec = parse_valid(spec_data)
        queue_of = {n.id: n.queue for n in spec.nodes}.get
        obs = observer or RecordingObserver(self.store, self.bus, queue_of=queue_of)
        ctx = RunContext(run_id=run_id, observer=obs, limiter=self.limiter, extra=dict(self.extra))
        try:
            final = invoke(spec, state_from_input(run_input), ctx)
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
        self.bus.publish(run_id, "end", record)
        return record

    def shutdown(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
