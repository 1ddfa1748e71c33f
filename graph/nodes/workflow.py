"""`workflow` node: runs a saved workflow as a child run and reads its final_output.

The child is a run of its own (parent_run_id set), started through `ctx.children`
(graph/runtime.py ChildRuns): in-process threads in embedded mode, queued runs in
distributed mode, where the parent waits without holding a worker (ctx.wait) and this
node runs again, from its start, when the child has ended.
"""

from __future__ import annotations

from typing import Any

from ..errors import StepError
from ..runtime import RunContext
from ..templates import render
from .base import NodeImpl


def run_children(impl: NodeImpl, ctx: RunContext, step_key: str | None, workflow_id: str,
                 version: int | None, inputs: list[dict]) -> list[dict] | None:
    """The children's results in input order, or None after asking the run to wait for them."""
    if ctx.children is None:
        raise StepError(f"{impl.node.type} nodes need child runs, which this executor does not provide")
    key = step_key or f"{ctx.run_id}:{impl.node.id}:0"
    results = ctx.children.run(ctx.run_id, key, workflow_id, version, inputs)
    if results is None:
        ctx.wait({"kind": "children", "step_key": key})
        return None
    return results


def inherited_metadata(state: dict) -> dict:
    """The parent's metadata, which a child starts with (so a customer or tier, and the
    concurrency keys made of them, carry over to the children)."""
    metadata = state.get("metadata")
    return dict(metadata) if isinstance(metadata, dict) else {}


def failure(result: dict) -> str:
    """Why a child did not succeed, in a line naming the child run."""
    why = result.get("error") or "no reason recorded"
    return f"child run {result.get('run_id')} {result.get('status')}: {why}"


class WorkflowNodeImpl(NodeImpl):
    keyed = True  # gets its step key: the child runs are found by it when the node runs again

    def run(self, state: dict, ctx: RunContext, step_key: str | None = None) -> dict[str, Any]:
        cfg = self.node.config
        child_input = {"user_input": render(cfg.input, state),
                       "metadata": {**inherited_metadata(state),
                                    **{k: render(v, state) for k, v in cfg.metadata.items()}}}
        results = run_children(self, ctx, step_key, cfg.workflow, cfg.version, [child_input])
        if results is None:
            return {}
        result = results[0]
        if result.get("status") != "succeeded":
            raise StepError(f"workflow {cfg.workflow!r}: {failure(result)}")
        return {cfg.output_key: result.get("final_output")}
