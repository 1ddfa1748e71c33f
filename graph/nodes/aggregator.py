"""aggregator: collects state fields into one object (or one rendered text)."""

from __future__ import annotations

from ..templates import lookup, render
from .base import NodeImpl


class AggregatorNodeImpl(NodeImpl):
    def run(self, state, ctx):
        cfg = self.node.config
        if cfg.template:
            return {cfg.output_key: render(cfg.template, state)}
        return {cfg.output_key: {name: lookup(state, name) for name in cfg.fields}}
