"""Typed answers of the API: the server's own pydantic models, plus the live event types."""

from __future__ import annotations

from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field

from ..api.schemas import (DeliveryRecord, HookAccepted, HookRecord, MetricsSummary, RunRecord, RunSummary,
                           RunTrace, SpecDiff, StepRecord, TraceStep, ValidationResult, VersionRecord,
                           VersionSummary, WebhookRecord, WorkflowRecord, WorkflowSummary)
from ..graph.spec import WorkflowSpec

__all__ = ["DeliveryRecord", "HookAccepted", "HookRecord", "MetricsSummary", "RunRecord", "RunSummary",
           "RunTrace", "SpecDiff", "StepRecord", "TraceStep", "ValidationResult", "VersionRecord",
           "VersionSummary", "WebhookRecord", "WorkflowRecord", "WorkflowSummary", "WorkflowSpec",
           "StepEvent", "TokenEvent", "EndEvent", "ErrorEvent", "Event", "TERMINAL"]

TERMINAL = ("succeeded", "failed", "cancelled")


class StepEvent(StepRecord):
    """A step started (status running) or ended (succeeded, failed, reused)."""

    model_config = ConfigDict(extra="allow")
    kind: Literal["step"] = "step"


class TokenEvent(BaseModel):
    """A piece of an LLM node's answer, as the provider streamed it."""

    kind: Literal["token"] = "token"
    node_id: str
    delta: str


class EndEvent(BaseModel):
    """The run ended: its record with the final state. Always the last event."""

    kind: Literal["end"] = "end"
    run: RunRecord

    @property
    def status(self) -> str:
        return self.run.status

    @property
    def state(self) -> dict[str, Any] | None:
        return self.run.state


class ErrorEvent(BaseModel):
    """The server could not go on streaming (the run itself may still be going)."""

    kind: Literal["error"] = "error"
    detail: str
    errors: list[dict[str, Any]] = Field(default_factory=list)


Event = Union[StepEvent, TokenEvent, EndEvent, ErrorEvent]
