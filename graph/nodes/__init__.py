"""Node implementations: `make_node(node, spec)` returns the callable for one spec node.

Each node type lives in its own module; every implementation derives from
`base.NodeImpl` and returns a partial GraphState update.
"""

from __future__ import annotations

from typing import Any

from .aggregator import AggregatorNodeImpl
from .api import APINodeImpl
from .base import NodeImpl
from .db import DBNodeImpl
from .image import ImageNodeImpl
from .input import InputNodeImpl
from .llm import LLMNodeImpl
from .router import RouterNodeImpl
from .tool import ToolNodeImpl

NODE_IMPLS: dict[str, type[NodeImpl]] = {
    "input": InputNodeImpl,
    "router": RouterNodeImpl,
    "llm": LLMNodeImpl,
    "image": ImageNodeImpl,
    "db": DBNodeImpl,
    "aggregator": AggregatorNodeImpl,
    "api": APINodeImpl,
    "tool": ToolNodeImpl,
}


def make_node(node: Any, spec: Any) -> NodeImpl:
    """Build the implementation of one spec node (raises StepError on a bad source)."""
    try:
        cls = NODE_IMPLS[node.type]
    except KeyError:
        raise ValueError(f"unknown node type {node.type!r}") from None
    return cls(node, spec)


__all__ = ["NODE_IMPLS", "NodeImpl", "make_node"]
