"""The API's endpoints, described once for both clients.

Each method builds a `Call` and hands it to its client: `AgentFlow.call` performs it and
returns the parsed answer, `AsyncAgentFlow.call` returns an awaitable of the same. List
methods hand the client a page walk (`client.pages`): an iterator on the sync client, an
async iterator on the async one. So `client.workflows.get("x")` is a WorkflowRecord with
AgentFlow and `await client.workflows.get("x")` with AsyncAgentFlow.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx

from ..graph.spec import WorkflowSpec
from ._core import Call, check, iso, run_input, spec_json
from .models import (DeliveryRecord, HookRecord, MetricsSummary, RunRecord, RunSummary, RunTrace, SpecDiff,
                     ValidationResult, VersionRecord, VersionSummary, WebhookRecord, WorkflowRecord,
                     WorkflowSummary)


def _items(model):
    return lambda body: [model.model_validate(item) for item in body["items"]]


def _validation(response: httpx.Response) -> Any:
    # an invalid spec is an answer here (422 with {valid, errors}), not an exception
    if response.status_code == 422 and "valid" in response.text:
        return response.json()
    return check(response)


class _Part:
    def __init__(self, client):
        self._client = client

    def _call(self, method: str, path: str, parse, **options: Any) -> Any:
        return self._client.call(Call(method, path, options, parse))


class Workflows(_Part):
    def save(self, spec: WorkflowSpec | dict[str, Any]) -> WorkflowRecord:
        """Save (a new version unless identical to the current one)."""
        return self._call("POST", "/workflows", WorkflowRecord.model_validate, json=spec_json(spec))

    def validate(self, spec: WorkflowSpec | dict[str, Any]) -> ValidationResult:
        """{valid, errors}: an invalid spec is an answer here, not an exception."""
        return self._client.call(Call("POST", "/workflows/validate", {"json": spec_json(spec)},
                                      ValidationResult.model_validate, _validation))

    def get(self, workflow_id: str) -> WorkflowRecord:
        return self._call("GET", f"/workflows/{workflow_id}", WorkflowRecord.model_validate)

    def list(self, q: str | None = None, page_size: int = 100):
        """Every workflow, newest first, fetching page after page."""
        return self._client.pages("/workflows", {"q": q}, WorkflowSummary, page_size)

    def delete(self, workflow_id: str) -> None:
        return self._call("DELETE", f"/workflows/{workflow_id}", lambda _: None)

    def versions(self, workflow_id: str) -> list[VersionSummary]:
        """Newest first."""
        return self._call("GET", f"/workflows/{workflow_id}/versions", _items(VersionSummary))

    def version(self, workflow_id: str, version: int) -> VersionRecord:
        return self._call("GET", f"/workflows/{workflow_id}/versions/{version}", VersionRecord.model_validate)

    def diff(self, workflow_id: str, a: int, b: int) -> SpecDiff:
        return self._call("GET", f"/workflows/{workflow_id}/versions/{a}/diff/{b}", SpecDiff.model_validate)

    def rollback(self, workflow_id: str, version: int) -> WorkflowRecord:
        """Save version `version`'s spec as a new version."""
        return self._call("POST", f"/workflows/{workflow_id}/rollback", WorkflowRecord.model_validate,
                          json={"version": version})


class RunHandle:
    """A handle on one run (`client.runs.submit(...)` or `client.runs.attach(run_id)`); the
    calls both clients share. Waiting and streaming are the clients' own (sync.Run, aio.AsyncRun)."""

    def __init__(self, client, run_id: str, status: str = "queued"):
        self._client, self.id, self.last_status = client, run_id, status

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.id} {self.last_status}>"

    def _record(self, body: Any) -> RunRecord:
        record = RunRecord.model_validate(body)
        self.last_status = record.status
        return record

    def refresh(self) -> RunRecord:
        return self._client.call(Call("GET", f"/runs/{self.id}", parse=self._record))

    def status(self) -> str:
        return self._client.call(Call("GET", f"/runs/{self.id}", parse=lambda body: self._record(body).status))

    def cancel(self) -> str:
        """Cancel if queued or running; the status after the call."""
        def after(body: Any) -> str:
            self.last_status = body["status"]
            return self.last_status
        return self._client.call(Call("POST", f"/runs/{self.id}/cancel", parse=after))

    def resume(self, node: str, choice: str, values: dict[str, Any] | None = None):
        """Answer the person's question of a waiting run (see `record.waiting_for`)."""
        return self._client.runs.resume(self.id, node, choice, values)

    def trace(self) -> RunTrace:
        return self._client.call(Call("GET", f"/runs/{self.id}/trace", parse=RunTrace.model_validate))

    def rerun(self, from_node: str, state: dict[str, Any] | None = None, *, stream: bool = False):
        """A new run from `from_node` with `state` edits; earlier steps are reused, not paid again."""
        body = {"from_node": from_node, "state": state or {}, "stream": stream}
        return self._client.call(Call("POST", f"/runs/{self.id}/rerun", {"json": body},
                                      lambda answer: self._client.run(answer["run_id"], answer["status"])))


class Runs(_Part):
    def submit(self, workflow_id: str, input: str | dict[str, Any] | None = None, *,
               metadata: dict[str, Any] | None = None, stream: bool = False):
        """Start a run of the workflow's current version; `stream=True` makes LLM nodes
        send their tokens as TokenEvents on the run's `stream()`."""
        return self._call("POST", f"/workflows/{workflow_id}/runs",
                          lambda body: self._client.run(body["run_id"], body["status"]),
                          json={"input": run_input(input, metadata), "stream": stream})

    def attach(self, run_id: str):
        return self._client.run(run_id)

    def get(self, run_id: str) -> RunRecord:
        return self._call("GET", f"/runs/{run_id}", RunRecord.model_validate)

    def list(self, workflow_id: str | None = None, page_size: int = 100):
        """Runs, newest first, page after page."""
        return self._client.pages("/runs", {"workflow_id": workflow_id}, RunSummary, page_size)

    def trace(self, run_id: str) -> RunTrace:
        return self.attach(run_id).trace()

    def resume(self, run_id: str, node: str, choice: str, values: dict[str, Any] | None = None):
        """POST /runs/{id}/resume: Conflict (409) when the run is not waiting, 422 for a wrong node or choice."""
        return self._call("POST", f"/runs/{run_id}/resume", lambda body: body,
                          json={"node": node, "choice": choice, "values": values or {}})


class Metrics(_Part):
    def summary(self, start: datetime | str | None = None, end: datetime | str | None = None, *,
                workflow_id: str | None = None, bucket_seconds: int | None = None) -> MetricsSummary:
        params = {k: v for k, v in {"from": iso(start), "to": iso(end), "workflow_id": workflow_id,
                                    "bucket_seconds": bucket_seconds}.items() if v is not None}
        return self._call("GET", "/metrics/summary", MetricsSummary.model_validate, params=params)


class _Records(_Part):
    """Records kept by id under one path: list, get, delete."""

    path = ""
    model: Any = None

    def list(self) -> list:
        return self._call("GET", self.path, _items(self.model))

    def get(self, record_id: str):
        return self._call("GET", f"{self.path}/{record_id}", self.model.model_validate)

    def delete(self, record_id: str) -> None:
        return self._call("DELETE", f"{self.path}/{record_id}", lambda _: None)


class Hooks(_Records):
    """Inbound triggers (POST /hooks/{id} signed with the key in `secret_env`): HookRecords."""

    path, model = "/hooks", HookRecord

    def create(self, workflow_id: str, secret_env: str) -> HookRecord:
        return self._call("POST", "/hooks", HookRecord.model_validate,
                          json={"workflow_id": workflow_id, "secret_env": secret_env})


class Webhooks(_Records):
    """Outbound notifications when runs end: WebhookRecords."""

    path, model = "/webhooks", WebhookRecord

    def create(self, url: str, events: list[str] | None = None, *, workflow_id: str | None = None,
               secret_env: str | None = None) -> WebhookRecord:
        body: dict[str, Any] = {"url": url, "workflow_id": workflow_id, "secret_env": secret_env}
        if events is not None:
            body["events"] = events
        return self._call("POST", "/webhooks", WebhookRecord.model_validate, json=body)

    def deliveries(self, webhook_id: str) -> list[DeliveryRecord]:
        return self._call("GET", f"/webhooks/{webhook_id}/deliveries", _items(DeliveryRecord))
