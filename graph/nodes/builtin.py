"""The built-in node types and source kinds, as the registration objects our own
pyproject.toml declares under the entry point groups `agentflow.nodes` and
`agentflow.sources` (graph/registry.py loads them like any plugin's).

Each names its implementation as "module:Class" under agentflow.graph.nodes, imported
when a node of the type is first built, so a type whose implementation is not part of
this build still validates and is listed; building it says what is missing.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from .. import spec
from ..errors import StepError


@dataclass(frozen=True)
class BuiltinNode:
    node_model: type[BaseModel]
    impl: str                 # "module:Class" under agentflow.graph.nodes
    description: str
    # where its steps run in distributed mode: "runs" = inside the run driver (no outside call)
    queue: str = "runs"

    @property
    def config_model(self) -> type[BaseModel]:
        return self.node_model.model_fields["config"].annotation

    @property
    def source_kind(self) -> str | None:
        return spec.NODE_SOURCE_KIND[spec._tag_of(self.node_model, "type")]

    def make(self, node: Any, workflow: Any):
        module, _, name = self.impl.partition(":")
        try:
            cls = getattr(importlib.import_module(f"{__package__}.{module}"), name)
        except (ImportError, AttributeError):
            raise StepError(f"node type {node.type!r} has no implementation in this build ({self.impl})",
                            node_id=node.id) from None
        return cls(node, workflow)


@dataclass(frozen=True)
class BuiltinSource:
    source_model: type[BaseModel]
    description: str

    @property
    def config_model(self) -> type[BaseModel]:
        return self.source_model


INPUT = BuiltinNode(spec.InputNode, "input:InputNodeImpl", "Entry point: the user's input and metadata")
ROUTER = BuiltinNode(spec.RouterNode, "router:RouterNodeImpl", "Pick a branch by rules or by asking an LLM",
                     "agentflow.llm")
LLM = BuiltinNode(spec.LLMNode, "llm:LLMNodeImpl", "Generate text with a language model", "agentflow.llm")
IMAGE = BuiltinNode(spec.ImageNode, "image:ImageNodeImpl", "Generate an image from a prompt", "agentflow.image")
DB = BuiltinNode(spec.DBNode, "db:DBNodeImpl", "Run a read-only SQL query", "agentflow.db")
AGGREGATOR = BuiltinNode(spec.AggregatorNode, "aggregator:AggregatorNodeImpl",
                         "Combine state fields into the final output")
API = BuiltinNode(spec.APINode, "api:APINodeImpl", "Call an external HTTP API", "agentflow.api")
HUMAN = BuiltinNode(spec.HumanNode, "human:HumanNodeImpl", "Wait for a person to approve or answer")
WORKFLOW = BuiltinNode(spec.WorkflowNode, "workflow:WorkflowNodeImpl", "Run a saved workflow as a child run")
MAP = BuiltinNode(spec.MapNode, "map:MapNodeImpl", "Run a workflow for each item of a list")
TOOL = BuiltinNode(spec.ToolNode, "tool:ToolNodeImpl", "Call a tool of an MCP server", "agentflow.api")
# router: in rules mode it runs in the driver; only llm mode calls out, on agentflow.llm

LLM_SOURCE = BuiltinSource(spec.LLMSource, "An OpenAI-compatible chat model")
IMAGE_SOURCE = BuiltinSource(spec.ImageSource, "An OpenAI-compatible image model")
DB_SOURCE = BuiltinSource(spec.DBSource, "A PostgreSQL or SQLite database (read-only queries)")
API_SOURCE = BuiltinSource(spec.APISource, "An HTTP API under one base URL")
MCP_SOURCE = BuiltinSource(spec.MCPSource, "An MCP server (stdio or streamable HTTP)")

# What pyproject.toml declares, by entry point name; registry.py falls back to these
# when the installed metadata predates them (an old `pip install -e .`).
NODES = {"input": INPUT, "router": ROUTER, "llm": LLM, "image": IMAGE, "db": DB, "aggregator": AGGREGATOR,
         "api": API, "human": HUMAN, "workflow": WORKFLOW, "map": MAP, "tool": TOOL}
SOURCES = {"llm": LLM_SOURCE, "image": IMAGE_SOURCE, "db": DB_SOURCE, "api": API_SOURCE, "mcp": MCP_SOURCE}
