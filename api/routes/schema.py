"""What a spec may contain: GET /schema (the WorkflowSpec JSON Schema Studio builds its
forms from) and GET /node-types (every node type and source kind, built-in or plugin,
with its JSON Schema, and the plugins that failed to load)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field

from ...graph import registry
from ...graph.spec import workflow_json_schema
from ..body import JSONRoute

router = APIRouter(tags=["schema"], route_class=JSONRoute)


@lru_cache(maxsize=1)
def _schema() -> dict[str, Any]:
    return workflow_json_schema()


@router.get("/schema", summary="WorkflowSpec JSON Schema", response_model=dict[str, Any])
async def get_schema() -> dict[str, Any]:
    return _schema()


class Origin(BaseModel):
    kind: Literal["builtin", "plugin"]
    package: str = Field(description="The distribution that declares the entry point.")
    version: str | None = None


class NodeTypeOut(BaseModel):
    type: str
    description: str
    queue: str = Field(description="The Celery queue its steps run on in distributed mode.")
    source_kind: str | None = Field(None, description="The kind of source a node of this type needs.")
    origin: Origin
    schema_: dict[str, Any] = Field(alias="schema", description="JSON Schema of one node of this type.")


class SourceKindOut(BaseModel):
    kind: str
    description: str
    origin: Origin
    schema_: dict[str, Any] = Field(alias="schema", description="JSON Schema of one source of this kind.")


class LoadErrorOut(BaseModel):
    group: str
    name: str
    package: str | None = None
    version: str | None = None
    error: str


class PluginOut(BaseModel):
    package: str
    version: str | None = None
    node_types: list[str]
    source_kinds: list[str]
    errors: list[LoadErrorOut]


class NodeTypes(BaseModel):
    node_types: list[NodeTypeOut]
    source_kinds: list[SourceKindOut]
    plugins: list[PluginOut] = Field(description="Installed plugin distributions (not agentflow itself).")
    errors: list[LoadErrorOut] = Field(description="Entry points that failed to load, and were skipped.")


@lru_cache(maxsize=1)
def _node_types() -> dict[str, Any]:
    reg = registry.get()  # read once per process: a newly installed plugin shows after a restart
    return {"node_types": [t.info() for t in reg.nodes.values()],
            "source_kinds": [s.info() for s in reg.sources.values()],
            "plugins": reg.plugins(),
            "errors": [e.as_dict() for e in reg.errors]}


@router.get("/node-types", summary="Node types and source kinds, built-in and plugins", response_model=NodeTypes,
            response_model_by_alias=True)
async def get_node_types() -> dict[str, Any]:
    return _node_types()
