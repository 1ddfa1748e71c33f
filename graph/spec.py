"""WorkflowSpec: the JSON contract (contract.md section 1) as pydantic v2 models.

Every model forbids unknown keys, so a typo in a spec is an error with a path rather
than a silently ignored setting. `workflow_json_schema()` is what Studio builds its
property forms from.
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any, Callable, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, TypeAdapter, field_validator
from pydantic_core import PydanticCustomError, core_schema

Identifier = Annotated[
    str,
    Field(min_length=1, max_length=128, pattern=r"^[A-Za-z_][A-Za-z0-9_\-]*$",
          description="Letters, digits, '_' and '-'; starts with a letter or '_'."),
]
EnvName = Annotated[
    str,
    Field(min_length=1, max_length=256, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
          description="Name of an environment variable (never its value)."),
]
# Output keys become GraphState channels, so they follow the same rule as ids but no '-'.
StateKey = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z][A-Za-z0-9_]*$")]

NODE_TYPES = ("input", "router", "llm", "image", "db", "aggregator", "api", "human", "workflow", "map", "tool")
SOURCE_KINDS = ("llm", "image", "db", "api", "mcp")
# Which source kind each node type may use; None = the node takes no source.
NODE_SOURCE_KIND: dict[str, str | None] = {
    "input": None, "router": "llm", "llm": "llm", "image": "image",
    "db": "db", "aggregator": None, "api": "api",
    "human": None, "workflow": None, "map": None, "tool": "mcp",
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


# ---------------------------------------------------------------- node configs


class _CallConfig(_Strict):
    """Settings shared by nodes that call the outside world."""

    timeout_seconds: float | None = Field(None, gt=0, le=600, description="Per-attempt timeout.")
    max_retries: int | None = Field(None, ge=0, le=10, description="Retries after the first attempt.")


class InputConfig(_Strict):
    defaults: dict[str, Any] = Field(default_factory=dict,
                                     description="Metadata defaults merged under the run's metadata.")


class RouterRule(_Strict):
    condition: str = Field(description="Condition over GraphState, e.g. \"metadata.tier == 'paid'\".")
    value: str = Field(description="Value written to output_key when the condition holds.")


class RouterConfig(_CallConfig):
    mode: Literal["rules", "llm"] = "rules"
    output_key: StateKey = "intent"
    rules: list[RouterRule] = Field(default_factory=list, description="rules mode: first match wins.")
    default: str | None = Field(None, description="Value when no rule matches (rules mode).")
    labels: list[str] = Field(default_factory=list, description="llm mode: the allowed answers.")
    prompt: str | None = Field(None, description="llm mode: classification prompt template.")
    temperature: float | None = Field(0.0, ge=0, le=2)


class LLMConfig(_CallConfig):
    prompt: str = Field(description="User message template, e.g. 'Answer: {user_input}'.")
    system: str | None = Field(None, description="Optional system message template.")
    output_key: StateKey = "text_result"
    max_tokens: int | None = Field(None, gt=0, le=200_000)
    temperature: float | None = Field(None, ge=0, le=2)
    stream: bool = Field(False, description="Stream tokens as they arrive.")
    tools: list[Identifier] = Field(default_factory=list,
                                    description="Ids of mcp sources whose tools the model may call.")
    max_tool_calls: int = Field(5, ge=0, le=50, description="At most this many tool calls per step.")


class ImageConfig(_CallConfig):
    prompt: str
    size: str = Field("1024x1024", pattern=r"^\d{2,5}x\d{2,5}$")
    n: int = Field(1, ge=1, le=10)
    quality: str | None = None
    output_key: StateKey = "image_result"


class DBConfig(_CallConfig):
    query: str = Field(description="One read-only SQL statement with :named parameters.")
    params: dict[str, Any] = Field(default_factory=dict,
                                   description="Parameter values; strings are templates over GraphState.")
    output_key: StateKey = "db_result"
    max_rows: int = Field(100, ge=1, le=100_000)


class AggregatorConfig(_Strict):
    fields: list[str] = Field(min_length=1, description="GraphState fields collected into the output.")
    output_key: StateKey = "final_output"
    template: str | None = Field(None, description="Optional text template; without it the output is an object.")


class APIConfig(_CallConfig):
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "GET"
    path: str = Field("", description="Path template appended to the source's base_url.")
    query: dict[str, str] = Field(default_factory=dict)
    headers: dict[str, str] = Field(default_factory=dict)
    body: Any = Field(None, description="JSON body; strings inside are templates.")
    output_key: StateKey = "api_result"


class HumanConfig(_Strict):
    """A person answers (contract section 5): the run waits, holding no worker."""

    prompt: str = Field(description="What the person is asked; a template over GraphState.")
    output_key: StateKey = "approval"
    choices: list[Annotated[str, Field(min_length=1, max_length=128)]] = Field(
        default_factory=lambda: ["approve", "reject"], min_length=1, max_length=32)
    timeout_s: float | None = Field(None, gt=0, le=90 * 24 * 3600,
                                    description="After this many seconds the node takes on_timeout.")
    on_timeout: str | None = Field(None, description="The choice taken when timeout_s passes (one of choices).")


class WorkflowConfig(_Strict):
    """Runs a saved workflow as a child run (contract section 6)."""

    workflow: Identifier = Field(description="Id of a saved workflow.")
    version: int | None = Field(None, ge=1, le=2_147_483_647, description="A pinned version; the latest when omitted.")
    input: str = Field("{user_input}", description="Template: the child's user_input.")
    metadata: dict[str, str] = Field(default_factory=dict, description="Templates: the child's metadata.")
    output_key: StateKey = "workflow_result"


class MapConfig(_Strict):
    """One child run per element of a list (contract section 6)."""

    over: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*$",
                      description="Dotted GraphState field holding a list, e.g. 'db_result.rows'.")
    workflow: Identifier = Field(description="Id of a saved workflow run for each item.")
    version: int | None = Field(None, ge=1, le=2_147_483_647)
    input: str = Field("{item}", description="Template over `item`, e.g. '{item.text}'.")
    output_key: StateKey = "map_result"
    max_items: int = Field(1000, ge=1, le=10_000)


class ToolConfig(_CallConfig):
    """Calls one tool of an MCP server (contract section 8)."""

    tool: str = Field(min_length=1, max_length=256, description="The tool's name on the server.")
    arguments: dict[str, Any] = Field(default_factory=dict, description="Strings inside are templates.")
    output_key: StateKey = "tool_result"


class RetryPolicy(_Strict):
    max_attempts: int = Field(3, ge=1, le=20, description="Attempts in all, the first included.")
    backoff_s: float = Field(1.0, ge=0, le=3600, description="Wait before the second attempt; doubles after.")


# ---------------------------------------------------------------- nodes


class _NodeBase(_Strict):
    id: Identifier
    source: str | None = Field(None, description="Id of a source of the kind this node type needs.")
    queue: str | None = Field(None, description="Id of a queue whose limits this node obeys.")
    sub_queue: str | None = Field(None, description="Sub-queue of that queue (else metadata.sub_queue).")
    label: str | None = Field(None, description="Display name in Studio.")
    position: dict[str, float] | None = Field(None, description="Canvas position {x, y}, kept by Studio.")
    retry: RetryPolicy | None = Field(None, description="Overrides the default retry policy.")


class InputNode(_NodeBase):
    type: Literal["input"]
    config: InputConfig = Field(default_factory=InputConfig)


class RouterNode(_NodeBase):
    type: Literal["router"]
    config: RouterConfig = Field(default_factory=RouterConfig)


class LLMNode(_NodeBase):
    type: Literal["llm"]
    config: LLMConfig


class ImageNode(_NodeBase):
    type: Literal["image"]
    config: ImageConfig


class DBNode(_NodeBase):
    type: Literal["db"]
    config: DBConfig


class AggregatorNode(_NodeBase):
    type: Literal["aggregator"]
    config: AggregatorConfig


class APINode(_NodeBase):
    type: Literal["api"]
    config: APIConfig = Field(default_factory=APIConfig)


class HumanNode(_NodeBase):
    type: Literal["human"]
    config: HumanConfig


class WorkflowNode(_NodeBase):
    type: Literal["workflow"]
    config: WorkflowConfig


class MapNode(_NodeBase):
    type: Literal["map"]
    config: MapConfig


class ToolNode(_NodeBase):
    type: Literal["tool"]
    config: ToolConfig


BUILTIN_NODES: tuple[type[_NodeBase], ...] = (InputNode, RouterNode, LLMNode, ImageNode, DBNode, AggregatorNode,
                                               APINode, HumanNode, WorkflowNode, MapNode, ToolNode)
NodeBase = _NodeBase  # what a plugin's node model is built on (graph/registry.py)

# ---------------------------------------------------------------- edges, queues


class Edge(_Strict):
    from_: Identifier = Field(alias="from")
    to: Identifier | list[Identifier]
    condition: str | None = Field(None, description="Safe expression over GraphState.")
    on_error: bool = Field(False, description="Taken only when `from` fails after its retries; "
                                              "the state then holds error = {node, message}.")

    @field_validator("to")
    @classmethod
    def _non_empty(cls, v: str | list[str]) -> str | list[str]:
        if isinstance(v, list) and not v:
            raise ValueError("'to' must name at least one node")
        return v

    @property
    def targets(self) -> list[str]:
        return [self.to] if isinstance(self.to, str) else list(self.to)


class SubQueue(_Strict):
    id: Identifier
    weight: float = Field(1.0, gt=0, le=1000)


class Queue(_Strict):
    id: Identifier
    max_messages_per_second: float | None = Field(None, gt=0)
    max_requests_per_minute: float | None = Field(None, gt=0)
    max_tokens_per_minute: int | None = Field(None, gt=0)
    burst_size: int | None = Field(None, ge=1)
    sub_queues: list[SubQueue] = Field(default_factory=list)
    max_concurrency: int | None = Field(None, ge=1, le=100_000,
                                        description="At most this many steps of the queue in flight, fleet-wide.")
    concurrency_key: str | None = Field(None, max_length=256,
                                        description="Template, e.g. '{metadata.customer}': the cap holds per key.")


# ---------------------------------------------------------------- sources


class _SourceBase(_Strict):
    id: Identifier
    description: str | None = None
    timeout_seconds: float | None = Field(None, gt=0, le=600)
    max_retries: int | None = Field(None, ge=0, le=10)


class LLMSource(_SourceBase):
    kind: Literal["llm"]
    provider: Literal["openai"] = "openai"
    model: str = Field(min_length=1)
    api_key_env: EnvName | None = None
    base_url_env: EnvName | None = None
    input_cost_per_1k: float | None = Field(None, ge=0, description="Overrides the price table.")
    output_cost_per_1k: float | None = Field(None, ge=0, description="Overrides the price table.")


class ImageSource(_SourceBase):
    kind: Literal["image"]
    provider: Literal["openai"] = "openai"
    model: str = Field(min_length=1)
    api_key_env: EnvName | None = None
    base_url_env: EnvName | None = None
    cost_per_image: float | None = Field(None, ge=0, description="Overrides the price table.")


class DBSource(_SourceBase):
    kind: Literal["db"]
    driver: Literal["postgresql", "sqlite"]
    dsn_env: EnvName
    statement_timeout_ms: int = Field(5000, ge=1, le=600_000)


class APISource(_SourceBase):
    kind: Literal["api"]
    base_url: str = Field(pattern=r"^https?://", description="http(s) base URL.")
    auth_env: EnvName | None = None
    auth_header: str = "Authorization"
    auth_scheme: str | None = Field("Bearer", description="Prefix before the secret; null for none.")
    allow_private: bool = Field(False, description="Allow loopback/private/link-local targets.")

    @field_validator("base_url")
    @classmethod
    def _no_credentials(cls, value: str) -> str:
        # A spec names secrets, never holds them (SECURITY.md): user:password@ is refused.
        authority = value.split("://", 1)[-1].split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
        if "@" in authority:
            raise ValueError("credentials in base_url are not allowed: name an environment variable in auth_env")
        return value


class MCPSource(_SourceBase):
    """An MCP server (contract section 8): stdio (a command) or streamable HTTP (a url)."""

    kind: Literal["mcp"]
    transport: Literal["stdio", "http"]
    command: str | None = Field(None, description="stdio: the server's executable.")
    args: list[str] = Field(default_factory=list, description="stdio: its arguments.")
    env: dict[EnvName, EnvName] = Field(default_factory=dict,
                                        description="stdio: server variable -> name of our variable holding its value.")
    url: str | None = Field(None, pattern=r"^https?://", description="http: the server's endpoint.")
    auth_env: EnvName | None = None
    allow_private: bool = Field(False, description="Allow loopback/private targets (http).")


BUILTIN_SOURCES: tuple[type[_SourceBase], ...] = (LLMSource, ImageSource, DBSource, APISource, MCPSource)
SourceBase = _SourceBase


# ---------------------------------------------------------------- the open unions
#
# Which node types and source kinds exist is decided by the installed entry points
# (graph/registry.py), not by this module: `Node` and `Source` look the model up by the
# tag at validation time, and build the discriminated union's JSON Schema from the same
# table, so a plugin's node validates with paths like nodes[2].config.prompt and shows
# in the schema exactly like a built-in one. Until the registry installs itself (it does
# on `import agentflow.graph`), the built-in models are the table.

def _tag_of(model: type[BaseModel], tag: str) -> str:
    return model.model_fields[tag].annotation.__args__[0]  # Literal["llm"] -> "llm"


_providers: dict[str, Callable[[], dict[str, type[BaseModel]]]] = {
    "type": lambda: {_tag_of(m, "type"): m for m in BUILTIN_NODES},
    "kind": lambda: {_tag_of(m, "kind"): m for m in BUILTIN_SOURCES},
}


def use_types(nodes: Callable[[], dict[str, type[BaseModel]]],
              sources: Callable[[], dict[str, type[BaseModel]]]) -> None:
    """Install the tables (tag -> model) that Node and Source validate with."""
    _providers["type"], _providers["kind"] = nodes, sources


_adapters: dict[tuple, TypeAdapter] = {}


class _OpenUnion:
    """A discriminated union whose members are read from `_providers[tag]` when used."""

    tag = ""

    @classmethod
    def models(cls) -> dict[str, type[BaseModel]]:
        return _providers[cls.tag]()

    @classmethod
    def _validate(cls, value: Any, _info) -> BaseModel:
        models = cls.models()
        if isinstance(value, BaseModel) and type(value) in models.values():
            return value
        if not isinstance(value, dict):
            raise PydanticCustomError("model_attributes_type", "Input should be a valid dictionary or object")
        if cls.tag not in value:
            raise PydanticCustomError("union_tag_not_found",
                                      "Unable to extract tag using discriminator '{discriminator}'",
                                      {"discriminator": cls.tag})
        model = models.get(value[cls.tag]) if isinstance(value[cls.tag], str) else None
        if model is None:
            expected = ", ".join(repr(t) for t in models)
            raise PydanticCustomError(
                "union_tag_invalid",
                "Input tag '{tag}' found using '{discriminator}' does not match any of the expected tags: "
                "{expected_tags}", {"tag": str(value[cls.tag]), "discriminator": cls.tag, "expected_tags": expected})
        return model.model_validate(value)  # its ValidationError keeps the paths (nodes[2].config.x)

    @classmethod
    def __get_pydantic_core_schema__(cls, _source, _handler) -> core_schema.CoreSchema:
        return core_schema.with_info_plain_validator_function(
            cls._validate,
            serialization=core_schema.wrap_serializer_function_ser_schema(lambda v, h: h(v),
                                                                          schema=core_schema.any_schema()))

    @classmethod
    def adapter(cls) -> TypeAdapter:
        """The current members as a plain discriminated union: for strict validation (a
        plain validator cannot pass strict mode on) and for the JSON Schema."""
        models = tuple(cls.models().values())
        key = (cls.tag, models)
        hit = _adapters.get(key)
        if hit is None:
            union = Annotated[Union[models], Field(discriminator=cls.tag)]  # type: ignore[misc,valid-type]
            hit = _adapters[key] = TypeAdapter(union)
        return hit

    @classmethod
    def __get_pydantic_json_schema__(cls, _core, handler):
        return handler(cls.adapter().core_schema)


class Node(_OpenUnion):
    """One element of a spec's `nodes`: the model of its `type`."""

    tag = "type"


class Source(_OpenUnion):
    """One element of a spec's `sources`: the model of its `kind`."""

    tag = "kind"

# ---------------------------------------------------------------- workflow


class WorkflowSpec(_Strict):
    id: Identifier
    name: str = Field(min_length=1, max_length=256)
    description: str | None = None
    start_node: Identifier
    nodes: list[Node] = Field(min_length=1)
    edges: list[Edge] = Field(default_factory=list)
    queues: list[Queue] = Field(default_factory=list)
    sources: list[Source] = Field(default_factory=list)
    # Specs are treated as immutable once parsed, so the content hash is computed once.
    _hash: str | None = PrivateAttr(default=None)

    def node(self, node_id: str):
        return next(n for n in self.nodes if n.id == node_id)

    def source(self, source_id: str | None):
        return next((s for s in self.sources if s.id == source_id), None)

    def queue(self, queue_id: str | None) -> Queue | None:
        return next((q for q in self.queues if q.id == queue_id), None)

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)

    def content_hash(self) -> str:
        if self._hash is None:
            self._hash = spec_hash(self.to_json())
        return self._hash


def spec_hash(data: dict[str, Any]) -> str:
    """Stable hash of a spec's content (key order does not matter)."""
    canon = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canon.encode()).hexdigest()


def workflow_json_schema() -> dict[str, Any]:
    schema = WorkflowSpec.model_json_schema(by_alias=True)
    schema["$id"] = "https://agentflow.dev/schema/workflow-spec.json"
    schema["title"] = "WorkflowSpec"
    return schema
