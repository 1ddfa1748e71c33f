"""A plugin's node (contract section 7): its `run(config, state)` as a NodeImpl, so it
is limited, recorded, traced and secret-scrubbed like every built-in step."""

from __future__ import annotations

import inspect

from ..errors import StepError
from ..state import BASE_FIELDS
from .base import NodeImpl


class PluginNodeImpl(NodeImpl):
    # A plugin's step always runs as a node task on its declared queue in distributed
    # mode: what it does is not known, so it never runs inside the run driver.
    calls_outside = True

    def __init__(self, node, spec, node_type):
        self.node_type = node_type
        super().__init__(node, spec)
        self._takes_source = "source" in inspect.signature(node_type.run).parameters

    def needs_source(self) -> bool:
        return self.node_type.source_kind is not None

    def source_kind(self) -> str | None:
        return self.node_type.source_kind

    def run(self, state, ctx):
        kwargs = {"source": self.source} if self._takes_source else {}
        update = self.node_type.run(self.node.config, dict(state), **kwargs)
        if update is None:
            return {}
        if not isinstance(update, dict):
            raise StepError(f"plugin node type {self.node.type!r} returned {type(update).__name__}, not a dict")
        allowed = BASE_FIELDS | {getattr(self.node.config, "output_key", None)}
        unknown = sorted(k for k in update if k not in allowed)
        if unknown:
            raise StepError(f"plugin node type {self.node.type!r} wrote {unknown}: a node writes state fields "
                            "or its config's output_key only")
        return update
