"""human: a person answers (contract section 5). The run waits, holding no worker.

The node asks through `ctx.people` (the run store); its answer is the step's output,
`{output_key: {"choice", "values", "by"}}`, so conditions read `approval.choice`.
"""

from __future__ import annotations

from ..templates import render
from .base import NodeImpl


class HumanNodeImpl(NodeImpl):
    asks_person = True

    def question(self, state: dict) -> str:
        return render(self.node.config.prompt, state)

    def answer(self, choice: str, values: dict | None = None, by: str | None = None) -> dict:
        return {self.node.config.output_key: {"choice": choice, "values": dict(values or {}), "by": by}}

    def run(self, state, ctx):  # pragma: no cover - graph/build.py asks through ctx.people instead
        raise RuntimeError("a human node is answered through ctx.people, never called directly")
