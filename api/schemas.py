"""Request and response models of the REST API (what /docs and schemathesis see).

Workflow specs and sources are not re-modelled here: bodies that carry them are parsed
by `agentflow.graph.validate` / the Source TypeAdapter so every problem is reported with
its path, and the OpenAPI document points at the spec's own JSON Schema
(`#/components/schemas/WorkflowSpec`, `#/components/schemas/Source`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator, model_validator

from ..store.schedules import cron_is_valid

SPEC_REF = "#/components/schemas/WorkflowSpec"
SOURCE_REF = "#/components/schemas/Source"

SpecJson = Annotated[dict[str, Any], WithJsonSchema({"allOf": [{"$ref": SPEC_REF}]})]
SourceJson = Annotated[dict[str, Any], WithJsonSchema({"allOf": [{"$ref": SOURCE_REF}]})]
from ..store.runs import RunStatus  # noqa: E402 - the one definition of a run's statuses


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------- errors


class Problem(BaseModel):
    path: str = Field(description="JSON path of the offending value, e.g. 'nodes[2].source'; '' = the whole body.")
    message: str


class ErrorResponse(BaseModel):
    detail: str
    errors: list[Problem] = Field(default_factory=list)


class ValidationResult(BaseModel):
    valid: bool
    errors: list[Problem]
    detail: str | None = None


# ---------------------------------------------------------------- workflows


class WorkflowRecord(BaseModel):
    id: str
    name: str
    description: str | None = None
    version: int
    spec: SpecJson
    created_at: datetime
    updated_at: datetime


class WorkflowSummary(BaseModel):
    id: str
    name: str
    description: str | None = None
    version: int
    updated_at: datetime


class WorkflowPage(BaseModel):
    items: list[WorkflowSummary]
    next_cursor: str | None = Field(None, description="Pass as ?cursor= for the next page; null on the last page.")


class VersionSummary(BaseModel):
    version: int
    created_at: datetime
    spec_hash: str
    author: str | None = Field(None, description="Who saved this version (the token's subject).")
    editors: list[str] = Field(default_factory=list, description=(
        "Who edited the workflow's shared document (collaborative editing) since the version before."))


class VersionList(BaseModel):
    items: list[VersionSummary]


class VersionRecord(VersionSummary):
    spec: SpecJson


# ---------------------------------------------------------------- runs


class RunInput(BaseModel):
    """The run's initial GraphState: `user_input`, `metadata`, and optionally other state fields."""

    model_config = ConfigDict(extra="allow")
    user_input: str = ""
    metadata: dict[str, Any] = Field(default_factory=dict)


def _or_text(schema: dict[str, Any]) -> None:
    """Document the string shorthand next to the object."""
    obj = {k: v for k, v in schema.items() if k in ("$ref", "allOf")}
    for key in obj:
        schema.pop(key)
    schema["anyOf"] = [obj, {"type": "string", "description": "shorthand for {\"user_input\": <text>}"}]


def input_as_dict(value: Any) -> Any:
    """`"text"` is shorthand for `{"user_input": "text"}`."""
    if isinstance(value, str):
        return {"user_input": value}
    return value


class RunCreate(_In):
    input: RunInput = Field(default_factory=RunInput, json_schema_extra=_or_text,
                            description='{"user_input": "...", "metadata": {...}}, or a string as user_input.')
    stream: bool = Field(False, description="Stream LLM tokens as `token` events on GET /runs/{id}/events.")

    @field_validator("input", mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return input_as_dict(value)


class RunQueued(BaseModel):
    run_id: str
    status: RunStatus


class StepRecord(BaseModel):
    run_id: str | None = None
    node_id: str
    node_type: str | None = None
    status: str = Field(description="running, succeeded or failed; lost (its worker died, the step was "
                                    "retried); reused (a re-run's copy of its parent's step).")
    attempt: int | None = None
    queue: str | None = None
    worker: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    duration_ms: float | None = None
    tokens: int | None = None
    cost: float | None = None
    error: str | None = None


class WaitingFor(BaseModel):
    node: str
    prompt: str
    choices: list[str]


class RunSummary(BaseModel):
    run_id: str
    workflow_id: str | None = None
    workflow_version: int | None = None
    status: RunStatus
    error: str | None = None
    tokens_used: int | None = None
    cost: float | None = None
    attempts: int | None = None
    created_at: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    parent_run_id: str | None = Field(None, description=(
        "A child run: the run whose workflow or map node started it; a re-run: the run it re-runs."))
    rerun_from: str | None = Field(None, description="A re-run: the node it started at.")
    waiting_for: list[WaitingFor] = Field(default_factory=list,
                                            description="status `waiting`: the questions a person may answer.")


class ResumeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    node: str = Field(min_length=1, max_length=128, description="The waiting human node.")
    choice: str = Field(min_length=1, max_length=128, description="One of its choices.")
    values: dict[str, Any] = Field(default_factory=dict, description="Optional values the person filled in.")


class ResumeResult(BaseModel):
    run_id: str
    status: Literal["resumed"]
    node: str
    choice: str


class ChildRun(BaseModel):
    """A run started by a workflow or map node of its parent."""

    run_id: str
    workflow_id: str | None = None
    workflow_version: int | None = None
    status: RunStatus
    error: str | None = None
    node_id: str | None = Field(None, description="The parent's node that started it.")
    step_key: str | None = None
    index: int = Field(0, description="Its position in the map's list (0 for a workflow node).")
    tokens_used: int | None = None
    cost: float | None = None
    created_at: str | None = None
    finished_at: str | None = None


class RunRecord(RunSummary):
    input: dict[str, Any] | None = None
    state: dict[str, Any] | None = None
    steps: list[StepRecord] = Field(default_factory=list)
    children: list[ChildRun] = Field(default_factory=list, description="Child runs (workflow and map nodes).")


class RunPage(BaseModel):
    items: list[RunSummary]
    next_cursor: str | None = None


class CancelResult(BaseModel):
    run_id: str
    status: RunStatus


class ExecuteRequest(_In):
    spec: Annotated[Any, WithJsonSchema({"allOf": [{"$ref": SPEC_REF}]})] = Field(description="A WorkflowSpec.")
    initial_state: RunInput = Field(default_factory=RunInput, json_schema_extra=_or_text,
                                    description="Initial GraphState: user_input, metadata, other state fields.")

    @field_validator("initial_state", mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return input_as_dict(value)


class ExecuteResult(BaseModel):
    run_id: str
    status: RunStatus
    state: dict[str, Any] | None = None
    error: str | None = None
    steps: list[StepRecord] = Field(default_factory=list)
    tokens_used: int | None = None
    cost: float | None = None


# ---------------------------------------------------------------- sources


class SourcePage(BaseModel):
    items: list[SourceJson]
    next_cursor: str | None = None


# ---------------------------------------------------------------- schedules


class ScheduleIn(_In):
    workflow_id: str = Field(min_length=1, max_length=128)
    cron: str | None = Field(None, max_length=128, description="Five-field cron expression, UTC.")
    interval_seconds: float | None = Field(None, ge=1, le=366 * 86400)
    input: RunInput = Field(default_factory=RunInput, json_schema_extra=_or_text)
    enabled: bool = True

    @field_validator("input", mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return input_as_dict(value)

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is not None:
            value = value.strip()
            if not cron_is_valid(value):
                raise ValueError(f"not a valid cron expression: {value!r}")
        return value

    @model_validator(mode="after")
    def _one_timing(self) -> "ScheduleIn":
        if (self.cron is None) == (self.interval_seconds is None):
            raise ValueError("give exactly one of cron or interval_seconds")
        return self


class ScheduleRecord(BaseModel):
    id: str
    workflow_id: str
    cron: str | None = None
    interval_seconds: float | None = None
    input: dict[str, Any]
    enabled: bool
    last_run_at: datetime | None = None
    next_run_at: datetime | None = None
    created_at: datetime
    updated_at: datetime


class SchedulePage(BaseModel):
    items: list[ScheduleRecord]
    next_cursor: str | None = None


# ---------------------------------------------------------------- health


class Health(BaseModel):
    status: Literal["ok"]
    mode: Literal["embedded", "distributed"]


class Readiness(BaseModel):
    ready: bool
    checks: dict[str, str] = Field(description="Each check's result: 'ok' or why it failed.")


class NotReady(Readiness):
    detail: str
    errors: list[Problem] = Field(default_factory=list)


# ---------------------------------------------------------------- versions (diff, rollback)


class RollbackRequest(_In):
    version: int = Field(ge=1, le=2**31 - 1, description="The version whose spec becomes the new version.")


class ChangedItem(BaseModel):
    id: str
    fields: list[str] = Field(description="Dotted paths that differ, e.g. 'config.prompt'.")


class CollectionDiff(BaseModel):
    added: list[str]
    removed: list[str]
    changed: list[ChangedItem]


class EdgeRef(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    from_: str = Field(alias="from")
    to: str
    condition: str | None = None


class EdgeDiff(BaseModel):
    added: list[EdgeRef]
    removed: list[EdgeRef]


class SpecDiff(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    from_: int = Field(alias="from")
    to: int
    nodes: CollectionDiff
    edges: EdgeDiff = Field(description="Edges compared as (from, to, condition), one per target.")
    queues: CollectionDiff
    sources: CollectionDiff
    top: list[str] = Field(description="Top-level fields that changed (name, description, start_node ...).")


# ---------------------------------------------------------------- trace and re-run


class TraceStep(BaseModel):
    index: int
    node_id: str
    node_type: str | None = None
    status: str = Field(description="running, succeeded, failed, lost (worker died; retried) or reused.")
    attempt: int | None = None
    started_at: str | None = None
    finished_at: str | None = None
    duration_ms: float | None = None
    tokens: int | None = None
    cost: float | None = None
    error: str | None = None
    input: dict[str, Any] | None = Field(None, description="The state the node read (secrets redacted).")
    output: dict[str, Any] | None = Field(None, description="The state delta the node returned.")
    state_after: dict[str, Any] | None = Field(None, description="The state after this step's delta.")


class RunTrace(BaseModel):
    run_id: str
    workflow_id: str | None = None
    workflow_version: int | None = None
    status: RunStatus
    parent_run_id: str | None = None
    rerun_from: str | None = None
    initial_state: dict[str, Any]
    steps: list[TraceStep]
    final_state: dict[str, Any] | None = None
    children: list[ChildRun] = Field(default_factory=list, description="Child runs (workflow and map nodes).")


class RerunRequest(_In):
    from_node: str = Field(min_length=1, max_length=128, description="The node the new run starts at.")
    state: dict[str, Any] = Field(default_factory=dict,
                                  description="State fields to replace before that node runs.")
    stream: bool = Field(False, description="Stream LLM tokens on GET /runs/{id}/events.")


class RerunQueued(BaseModel):
    run_id: str
    status: RunStatus
    parent_run_id: str


# ---------------------------------------------------------------- dashboard


class Percentiles(BaseModel):
    p50: float | None = None
    p95: float | None = None


class RunCounts(BaseModel):
    total: int
    by_status: dict[str, int]


class WorkflowFigures(BaseModel):
    workflow_id: str | None = None
    runs: int
    tokens: int
    cost: float
    p50_ms: float | None = None
    p95_ms: float | None = None


class NodeFigures(BaseModel):
    workflow_id: str | None = None
    node_id: str
    node_type: str | None = None
    steps: int
    tokens: int
    cost: float
    p50_ms: float | None = None
    p95_ms: float | None = None


class SourceFigures(BaseModel):
    source_id: str
    calls: int
    tokens: int
    cost: float
    p50_ms: float | None = None
    p95_ms: float | None = None


class TimeBucket(BaseModel):
    bucket: datetime
    runs: int
    tokens: int
    cost: float
    p50_ms: float | None = None


class MetricsSummary(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    from_: datetime = Field(alias="from")
    to: datetime
    bucket_seconds: int
    runs: RunCounts
    tokens: int
    cost: float
    latency_ms: Percentiles
    per_workflow: list[WorkflowFigures]
    per_node: list[NodeFigures]
    per_source: list[SourceFigures]
    timeseries: list[TimeBucket]
    queue_wait_ms: Percentiles


# ---------------------------------------------------------------- webhooks


class HookCreate(_In):
    workflow_id: str = Field(min_length=1, max_length=128)
    secret_env: str = Field(min_length=1, max_length=256, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
                            description="Environment variable holding the HMAC key (never the key).")


class HookRecord(BaseModel):
    id: str
    url: str = Field(description="Where to POST: signed with X-AgentFlow-Signature / X-AgentFlow-Timestamp.")
    workflow_id: str
    secret_env: str
    enabled: bool
    created_at: datetime


class HookList(BaseModel):
    items: list[HookRecord]


class HookAccepted(BaseModel):
    run_id: str
    status: RunStatus


WebhookEvent = Literal["run.succeeded", "run.failed", "run.cancelled"]


class WebhookCreate(_In):
    url: str = Field(min_length=8, max_length=2000, pattern=r"^https?://", description="http(s) URL to POST to.")
    events: list[WebhookEvent] = Field(default_factory=lambda: ["run.succeeded", "run.failed", "run.cancelled"],
                                       min_length=1)
    workflow_id: str | None = Field(None, min_length=1, max_length=128, description="Only this workflow's runs.")
    secret_env: str | None = Field(None, min_length=1, max_length=256, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
                                   description="Environment variable holding the signing key.")


class WebhookRecord(BaseModel):
    id: str
    url: str
    events: list[str]
    workflow_id: str | None = None
    secret_env: str | None = None
    enabled: bool
    created_at: datetime


class WebhookList(BaseModel):
    items: list[WebhookRecord]


class DeliveryRecord(BaseModel):
    id: int
    webhook_id: str
    run_id: str
    event: str
    attempt: int
    status: str = Field(description="pending, delivered or failed.")
    response_code: int | None = None
    error: str | None = None
    at: datetime


class DeliveryList(BaseModel):
    items: list[DeliveryRecord]
