"""Node implementations: `make_node(node, spec)` returns the callable for one spec node.

Which implementation a type has comes from the registry (graph/registry.py): built-in
types name their class (graph/nodes/builtin.py), a plugin's type runs through
`plugin.PluginNodeImpl`. Every implementation derives from `base.NodeImpl` and returns
a partial GraphState update.
"""

from __future__ import annotations

from typing import Any

from .. import registry
from .base import NodeImpl
from .plugin import PluginNodeImpl


def make_node(node: Any, spec: Any) -> NodeImpl:
    """Build the implementation of one spec node (raises StepError on a bad source)."""
    node_type = registry.node_type(node.type)
    if node_type is None:
        raise ValueError(f"unknown node type {node.type!r}")
    if node_type.make is not None:
        return node_type.make(node, spec)
    return PluginNodeImpl(node, spec, node_type)


__all__ = ["NodeImpl", "make_node"]
