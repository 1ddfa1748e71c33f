"""`map` node: one child run of a saved workflow per element of a list, results in order.

`over` names a state field holding the list; `input` is rendered per element with `item`
in scope. The children run in parallel as far as their queues allow. When some fail the
node fails, its message listing each failing index with its child run, so an on_error
edge can take over; every child is listed with its index under its parent run.
"""

from __future__ import annotations

from typing import Any

from ..errors import StepError
from ..runtime import RunContext
from ..templates import lookup, render
from .base import NodeImpl
from .workflow import failure, inherited_metadata, run_children

_LISTED_FAILURES = 10  # failing items named in the message; the rest are counted


class MapNodeImpl(NodeImpl):
    keyed = True

    def run(self, state: dict, ctx: RunContext, step_key: str | None = None) -> dict[str, Any]:
        cfg = self.node.config
        items = lookup(state, cfg.over)
        if not isinstance(items, list):
            what = "nothing" if items is None else f"a {type(items).__name__}"
            raise StepError(f"state field {cfg.over!r} must hold a list to map over, but holds {what}")
        if len(items) > cfg.max_items:
            raise StepError(f"state field {cfg.over!r} holds {len(items)} items, more than max_items "
                            f"({cfg.max_items})")
        metadata = inherited_metadata(state)
        inputs = [{"user_input": render(cfg.input, {**state, "item": item}), "metadata": {**metadata, "map_index": i}}
                  for i, item in enumerate(items)]
        results = run_children(self, ctx, step_key, cfg.workflow, cfg.version, inputs)
        if results is None:
            return {}
        failed = [(i, r) for i, r in enumerate(results) if r.get("status") != "succeeded"]
        if failed:
            listed = "; ".join(f"item {i}: {failure(r)}" for i, r in failed[:_LISTED_FAILURES])
            more = f"; and {len(failed) - _LISTED_FAILURES} more" if len(failed) > _LISTED_FAILURES else ""
            raise StepError(f"{len(failed)} of {len(results)} children of workflow {cfg.workflow!r} failed "
                            f"(items {', '.join(str(i) for i, _ in failed[:_LISTED_FAILURES * 5])}): {listed}{more}")
        return {cfg.output_key: [r.get("final_output") for r in results]}
