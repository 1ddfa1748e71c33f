"""What a node needs at call time, passed through LangGraph's config.

Compiled graphs are cached by spec hash and shared between runs, so anything that
belongs to one run (its id, the limiter, who records its steps) travels here rather
than being captured when the graph is built.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol

CONFIG_KEY = "agentflow"


class StepObserver(Protocol):
    """Receives step events; the store and the live event stream implement it.

    An observer whose `records_input` attribute is true also gets `input=<state>` (the
    state the node reads) in `step_started`."""

    def step_started(self, run_id: str, node_id: str, node_type: str, attempt: int) -> None: ...

    def step_finished(self, run_id: str, node_id: str, *, update: dict, tokens: int, cost: float,
                      duration_ms: float) -> None: ...

    def step_failed(self, run_id: str, node_id: str, *, error: str, duration_ms: float) -> None: ...

    def token(self, run_id: str, node_id: str, delta: str) -> None: ...


class NullObserver:
    def step_started(self, run_id, node_id, node_type, attempt):
        pass

    def step_finished(self, run_id, node_id, *, update, tokens, cost, duration_ms):
        pass

    def step_failed(self, run_id, node_id, *, error, duration_ms):
        pass

    def token(self, run_id, node_id, delta):
        pass


@dataclass
class RunContext:
    run_id: str = "adhoc"
    env: Mapping[str, str] = field(default_factory=lambda: os.environ)
    observer: StepObserver = field(default_factory=NullObserver)
    # agentflow.ratelimit.Limiter; None = no limits (tests, benches)
    limiter: Any = None
    # Distributed mode: runs a node's work elsewhere (a Celery queue) and returns its update.
    # Signature: dispatch(node_id, state, superstep) -> dict. None = run in this process.
    dispatch: Callable[[str, dict, int], dict] | None = None
    # Distributed driver: (step key, output if that step already succeeded) of one of the
    # driver's own nodes in a superstep. A resumed run reads those back instead of running
    # them again: its checkpoints are written only after remote steps (workers/checkpoints.py).
    resume: Callable[[str, int], tuple[str, dict | None]] | None = None
    # Whose run this is: rate-limit budgets are per tenant and workflow (graph/step.py).
    tenant_id: str | None = None
    # How long a node may wait for a rate-limit grant before failing (embedded mode).
    max_limit_wait: float = 300.0
    # Starts child runs for `workflow` and `map` nodes (see ChildRuns); None = not available.
    children: "ChildRuns | None" = None
    # Asks a person for `human` nodes (see People); None = this run cannot wait for one.
    people: "People | None" = None
    extra: dict = field(default_factory=dict)

    def wait(self, reason: dict) -> None:
        """Pause the run here until what `reason` names (a person, child runs, a remote step)
        is done: raises LangGraph's interrupt, so the run's checkpoint is kept and no worker
        is held. When the run resumes, the node function runs again from its start and must
        find its result by its step key (graph/runtime.py is the one place that interrupts)."""
        wait_for(reason)


def wait_for(reason: dict) -> None:
    """See RunContext.wait: the one place a run pauses."""
    from langgraph.types import interrupt

    interrupt(reason)


class People(Protocol):
    """Where a `human` node's question and answer live (the run store), shared by the embedded
    executor and the distributed driver."""

    def answer_of(self, step_key: str) -> dict | None:
        """The recorded answer (the step's output), or None while nobody answered."""

    def ask(self, run_id: str, node_id: str, step_key: str, state: dict, deadline_s: float | None) -> float:
        """Record the question once (its step row, status `waiting`) and arrange to wake the
        run at the deadline; returns when the wait began (epoch seconds)."""

    def answer(self, run_id: str, step_key: str, output: dict) -> dict | None:
        """Record an answer (the timeout's own included); None when one was recorded already."""


class ChildRuns(Protocol):
    """Runs saved workflows as child runs of a run (`workflow` and `map` nodes).

    `run` is idempotent by (`step_key`, index): calling it again for the same step finds
    the children it started. It returns one ChildResult a child, in the order of `inputs`,
    once every child has ended; None while some still run (distributed mode: the node then
    calls ctx.wait and the last child's end resumes the parent)."""

    def run(self, parent_run_id: str, step_key: str, workflow_id: str, version: int | None,
            inputs: list[dict]) -> "list[dict] | None": ...


def context_from(config: Mapping[str, Any] | None) -> RunContext:
    configurable = (config or {}).get("configurable", {}) if config else {}
    ctx = configurable.get(CONFIG_KEY)
    return ctx if isinstance(ctx, RunContext) else RunContext()
