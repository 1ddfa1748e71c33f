"""A run's trace: every step with what it read, what it wrote, and the state after it.

Steps keep the state the node read (`steps.input`) and the delta it returned
(`steps.output`). The state after each step is rebuilt here by applying the deltas in
step order with GraphState's own reducers (tokens and cost add up, metadata merges,
everything else is replaced), so the trace needs no checkpointer and reads the same in
embedded and distributed mode.

A re-run (`runs.parent_run_id` / `runs.rerun_from`) starts with copies of the parent's
reused steps (status `reused`); its `input` is the complete state it started from. Its
trace starts from the parent's initial state, applies the reused steps, then switches to
that start state (which also holds any edits) before the first step it executed.
"""

from __future__ import annotations

from typing import Annotated, Any, Callable, get_args, get_origin, get_type_hints

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ..graph.state import GraphState, initial_state
from . import crypto
from .db import session_scope
from .models import Run, Step
from .runs import step_dict

APPLIED = ("succeeded", "reused")  # steps whose output is part of the state


def _reducers() -> dict[str, Callable[[Any, Any], Any]]:
    out = {}
    for name, hint in get_type_hints(GraphState, include_extras=True).items():
        if get_origin(hint) is Annotated:
            out[name] = get_args(hint)[1]
    return out


REDUCERS = _reducers()


def apply_update(state: dict[str, Any], update: dict[str, Any] | None) -> dict[str, Any]:
    """The state after `update`, reduced as LangGraph reduces it (a new dict)."""
    out = dict(state)
    for key, value in (update or {}).items():
        reducer = REDUCERS.get(key)
        if reducer is None or key not in out:
            out[key] = value
        else:
            left = out[key]
            if left is None and reducer.__name__ == "add":
                left = 0
            out[key] = reducer(left, value)
    return out


def state_from_input(run_input: dict[str, Any] | None) -> dict[str, Any]:
    """A run's initial GraphState from its stored input (as the executors build it)."""
    data = dict(run_input or {})
    return initial_state(data.pop("user_input", ""), data.pop("metadata", None), **data)


# Steps recorded for a call made inside a node's step (an llm node's tool calls): shown in
# the trace, but their output is what the call answered, not an update of the state.
CALL_STEP_TYPES = frozenset({"tool_call"})


def updates_state(step: Any) -> bool:
    return step.node_type not in CALL_STEP_TYPES


def trace_step(index: int, step: Step) -> dict[str, Any]:
    base = step_dict(step)
    return {"index": index, "node_id": step.node_id, "node_type": step.node_type, "status": step.status,
            "attempt": step.attempt, "started_at": base["started_at"], "finished_at": base["finished_at"],
            "duration_ms": step.duration_ms, "tokens": step.tokens, "cost": step.cost, "error": step.error,
            "input": step.input, "output": step.output}


def walk(run: Run, steps: list[Step], base_initial: dict | None = None
         ) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """(initial state, trace steps, states before each step + the state after the last).

    `base_initial`: for a re-run, the initial state of the run it descends from; without
    it the trace starts from the re-run's own start state."""
    start = state_from_input(run.input)
    with_base = run.rerun_from is not None and base_initial is not None
    initial = dict(base_initial) if with_base else start
    # Without a base, reused steps are already folded into the start state.
    state, switched = dict(initial), not with_base
    items, before = [], []
    for index, step in enumerate(steps):
        if step.status != "reused" and not switched:
            # the re-run's own steps begin from its (possibly edited) start state
            state, switched = dict(start), True
        before.append(state)
        if updates_state(step) and (step.status == "succeeded" or (step.status == "reused" and not switched)):
            state = apply_update(state, step.output)
        item = trace_step(index, step)
        item["state_after"] = state
        items.append(item)
    before.append(state if switched else dict(start))
    return initial, items, before


def build_trace(run: Run, steps: list[Step], base_initial: dict | None = None) -> dict[str, Any]:
    """The trace document of GET /runs/{id}/trace."""
    initial, items, _ = walk(run, steps, base_initial)
    return {"run_id": run.id, "workflow_id": run.workflow_id, "workflow_version": run.workflow_version,
            "status": run.status, "parent_run_id": run.parent_run_id, "rerun_from": run.rerun_from,
            "initial_state": initial, "steps": items, "final_state": run.state}


class TraceStore:
    def __init__(self, factory: sessionmaker[Session]):
        self.factory = factory

    def load(self, run_id: str, tenant_id: str | None = None) -> tuple[Run, list[Step]] | None:
        with session_scope(self.factory) as s, crypto.about(f"run {run_id}"):
            run = s.get(Run, run_id)
            if run is None or (tenant_id is not None and run.tenant_id != tenant_id):
                return None
            steps = list(s.scalars(select(Step).where(Step.run_id == run_id).order_by(Step.id)))
            return run, steps

    def base_initial(self, run: Run, depth: int = 50) -> dict[str, Any] | None:
        """For a re-run: the initial state of the first run of its chain (None otherwise)."""
        if run.rerun_from is None or not run.parent_run_id:
            return None
        parent_id, found = run.parent_run_id, None
        with session_scope(self.factory) as s, crypto.about(f"run {parent_id}"):
            for _ in range(depth):
                row = s.execute(select(Run.input, Run.parent_run_id, Run.rerun_from)
                                .where(Run.id == parent_id)).first()
                if row is None:
                    break
                found = row[0]
                if row[2] is None or not row[1]:
                    break
                parent_id = row[1]
        return state_from_input(found) if found is not None else None

    def trace(self, run_id: str, tenant_id: str | None = None) -> dict[str, Any] | None:
        loaded = self.load(run_id, tenant_id)
        if loaded is None:
            return None
        run, steps = loaded
        return build_trace(run, steps, self.base_initial(run))

    def add_reused_steps(self, run_id: str, tenant_id: str, steps: list[Step]) -> None:
        """Copy a parent's steps into a re-run, marked `reused` (they are not executed again)."""
        with session_scope(self.factory) as s:
            for st in steps:
                s.add(Step(run_id=run_id, tenant_id=tenant_id, node_id=st.node_id, node_type=st.node_type,
                           status="reused", attempt=st.attempt, queue=st.queue, worker=st.worker,
                           started_at=st.started_at, finished_at=st.finished_at, duration_ms=st.duration_ms,
                           tokens=st.tokens, cost=st.cost, error=None, output=st.output, input=st.input))
