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
RunStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]


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
    status: str = Field(description="running, succeeded or failed.")
    attempt: int | None = None
    queue: str | None = None
    worker: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    duration_ms: float | None = None
    tokens: int | None = None
    cost: float | None = None
    error: str | None = None


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


class RunRecord(RunSummary):
    input: dict[str, Any] | None = None
    state: dict[str, Any] | None = None
    steps: list[StepRecord] = Field(default_factory=list)


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
