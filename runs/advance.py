"""Advancing a run: invoke its graph until it ends or pauses, then record which.

One function for the embedded executor and the distributed driver, so a run ends, fails,
is cancelled or waits the same way in both, and one `run_ended` tells the listeners.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from ..graph.build import compile_spec
from ..graph.runtime import CONFIG_KEY, RunContext
from ..graph.state import initial_state
from ..graph.step import StepFailed, describe
from ..store.runs import RunStore, public_waits
from .observer import RunCancelled

log = logging.getLogger(__name__)
RECURSION_LIMIT = 200


def state_from_input(run_input: dict[str, Any]) -> dict[str, Any]:
    """`{"user_input": ..., "metadata": {...}, <other state fields>}` -> the initial GraphState."""
    run_input = dict(run_input or {})
    return initial_state(run_input.pop("user_input", ""), run_input.pop("metadata", None), **run_input)


def graph_config(ctx: RunContext, thread_id: str | None = None) -> dict[str, Any]:
    """The config every graph invocation gets: the run's context and, with a checkpointer, its thread."""
    config: dict[str, Any] = {"configurable": {CONFIG_KEY: ctx}, "recursion_limit": RECURSION_LIMIT}
    if thread_id is not None:
        config["configurable"]["thread_id"] = thread_id
    return config


def invoke(spec, state: dict | None, ctx: RunContext, checkpointer=None, thread_id: str | None = None,
           start: str | None = None) -> Any:
    """Compile `spec` (cached) and run it in this thread; LangGraph's output, `__interrupt__` included."""
    return compile_spec(spec, checkpointer, start=start).invoke(state, config=graph_config(ctx, thread_id))


def run_ended(record: dict, listeners=()) -> None:
    """Count the run and tell the listeners; a failing listener never fails the run."""
    try:
        from .metrics import observe_run

        observe_run(record)
    except Exception:
        log.debug("run metrics not recorded", exc_info=True)
    for listener in listeners:
        try:
            listener(record)
        except Exception:
            log.exception("run-end listener failed for run %s", record.get("run_id"))


def advance(store: RunStore, bus, spec, run_id: str, ctx: RunContext, *, run_input: dict | None,
            tenant_id: str | None = None,
            checkpointer=None, start: str | None = None, listeners=(),
            reraise: Callable[[BaseException], bool] = lambda exc: False, attempts: int | None = None) -> str:
    """Run the graph from its checkpoint (or from `run_input` on its first advance) until it
    ends or pauses; returns the run's status. `reraise`: errors that are not the run's
    fault (infrastructure) and must reach the caller, which tries again later. `attempts`:
    the driver's advance count (distributed); a pause is recorded only while it is current."""
    try:
        out = invoke(spec, state_from_input(run_input) if run_input is not None else None, ctx, checkpointer,
                     thread_id=run_id, start=start)
    except RunCancelled:
        record = store.finish_and_get(run_id, "cancelled", error="cancelled by request")
    except StepFailed as exc:
        record = store.finish_and_get(run_id, "failed", error=str(exc))
    except Exception as exc:
        if reraise(exc):
            raise
        log.exception("run %s crashed", run_id)
        record = store.finish_and_get(run_id, "failed", error=describe(exc))
    else:
        waits = [i.value for i in (out or {}).get("__interrupt__", ())] if isinstance(out, dict) else []
        if waits:
            if not store.wait(run_id, waits, attempts=attempts):
                # a newer driver has the run (or it ended meanwhile): what it records stands
                log.info("run %s: pause not recorded, the run moved on without this driver", run_id)
                return store.status(run_id) or "missing"
            people = public_waits(waits)
            if people:
                bus.publish(run_id, "waiting", {"run_id": run_id, "status": "waiting", "waiting_for": people})
            return "waiting" if people else "running"
        if not isinstance(out, dict) or (run_input is None and not out):
            # nothing was left to run
            out = compile_spec(spec, checkpointer, start=start).get_state({"configurable": {"thread_id": run_id}}).values
        record = store.finish_and_get(run_id, "succeeded",
                                      state={k: v for k, v in dict(out).items() if k != "__interrupt__"})
    record = record or {}
    bus.publish(run_id, "end", record)
    # the listeners (webhooks) find the run's tenant without reading it again
    run_ended({**record, "tenant_id": tenant_id} if record and tenant_id else record, listeners)
    return record.get("status", "unknown")
