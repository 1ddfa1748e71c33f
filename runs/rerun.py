"""Re-run a finished run from a chosen node, with an edited state, reusing earlier steps.

The new run executes `from_node` and every node downstream of it; every other step of
the parent that succeeded is reused (copied with status `reused`, never executed or paid
again). Which steps are reused:

- steps that started before `from_node` first started in the parent, and
- steps of nodes `from_node` cannot reach (parallel branches that do not depend on it).

The state the new run starts from is the parent's initial state with the reused steps'
deltas applied in order (GraphState reducers), then the caller's overrides (each
top-level field replaced). It is stored as the new run's `input` and the run's
`rerun_from` names the node; the executors (embedded and the distributed run driver)
compile the graph with that node as its entry, so joins downstream still wait for their
other taken branches, whose outputs are already in the state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..graph.spec import WorkflowSpec
from ..graph.state import BASE_FIELDS
from ..store.models import Run, Step
from ..store.runs import TERMINAL, RunStore
from ..store.trace import APPLIED, TraceStore, apply_update, updates_state, walk


class RerunRefused(ValueError):
    def __init__(self, status: int, message: str, path: str = ""):
        super().__init__(message)
        self.status, self.message, self.path = status, message, path


@dataclass
class RerunPlan:
    start_state: dict[str, Any]
    reused: list[Step]


def reachable(spec: WorkflowSpec, node_id: str) -> set[str]:
    """`node_id` and every node an edge path leads to from it (conditions ignored)."""
    seen, todo = {node_id}, [node_id]
    while todo:
        current = todo.pop()
        for edge in spec.edges:
            if edge.from_ == current:
                for target in edge.targets:
                    if target not in seen:
                        seen.add(target)
                        todo.append(target)
    return seen


def state_fields(spec: WorkflowSpec) -> set[str]:
    return set(BASE_FIELDS) | {k for n in spec.nodes if (k := getattr(n.config, "output_key", None))}


def plan(run: Run, steps: list[Step], from_node: str, overrides: dict[str, Any] | None,
         base_initial: dict | None = None) -> RerunPlan:
    """Which of `run`'s steps to reuse and the state to start from (see the module doc).

    `base_initial`: when `run` is itself a re-run, the initial state of its chain."""
    if run.status not in TERMINAL:
        raise RerunRefused(409, f"run {run.id!r} is {run.status}; re-run it once it has ended")
    spec = WorkflowSpec.model_validate(run.spec)
    if from_node not in {n.id for n in spec.nodes}:
        raise RerunRefused(422, f"workflow {spec.id!r} has no node {from_node!r}", "from_node")
    unknown = sorted(set(overrides or {}) - state_fields(spec))
    if unknown:
        raise RerunRefused(422, f"not a state field of this workflow: {', '.join(unknown)}",
                           f"state.{unknown[0]}")
    for key, kinds, what in (("user_input", (str,), "a string"), ("metadata", (dict,), "an object"),
                             ("tokens_used", (int,), "an integer"), ("cost", (int, float), "a number")):
        value = (overrides or {}).get(key)
        if value is not None and (not isinstance(value, kinds) or isinstance(value, bool)):
            raise RerunRefused(422, f"state.{key} must be {what}", f"state.{key}")
    downstream = reachable(spec, from_node)
    # k: where the re-executed part begins (from_node's first step, else the first step
    # of a node downstream of it, else the end)
    k = next((i for i, st in enumerate(steps) if st.node_id == from_node),
             next((i for i, st in enumerate(steps) if st.node_id in downstream), len(steps)))
    _, _, before = walk(run, steps, base_initial)
    state = dict(before[k])
    reused = [st for i, st in enumerate(steps[:k]) if st.status in APPLIED]
    for st in steps[k:]:
        # a tool call's step ("<node>.tool:<name>") goes with its node
        if st.status in APPLIED and st.node_id.split(".tool:", 1)[0] not in downstream:
            reused.append(st)
            if updates_state(st):
                state = apply_update(state, st.output)
    state.update(overrides or {})
    return RerunPlan(state, reused)


def create_rerun(runs: RunStore, traces: TraceStore, run_id: str, tenant_id: str, from_node: str,
                 overrides: dict[str, Any] | None = None, options: dict | None = None) -> str | None:
    """Store the re-run (queued, with its reused steps); None when the parent is not found."""
    loaded = traces.load(run_id, tenant_id)
    if loaded is None:
        return None
    parent, steps = loaded
    p = plan(parent, steps, from_node, overrides, traces.base_initial(parent))
    new_id = runs.create(parent.spec, p.start_state, workflow_id=parent.workflow_id,
                         workflow_version=parent.workflow_version, tenant_id=parent.tenant_id,
                         options=options, parent_run_id=parent.id, rerun_from=from_node)
    traces.add_reused_steps(new_id, parent.tenant_id, p.reused)
    return new_id
