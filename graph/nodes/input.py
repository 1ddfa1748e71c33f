"""input: the entry node; merges configured metadata defaults under the run's metadata."""

from __future__ import annotations

from .base import NodeImpl


class InputNodeImpl(NodeImpl):
    def run(self, state, ctx):
        defaults = self.node.config.defaults
        if not defaults:
            return {}
        return {"metadata": {**defaults, **(state.get("metadata") or {})}}
