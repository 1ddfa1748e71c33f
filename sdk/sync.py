"""The blocking client: `AgentFlow(url, token=None)`."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any, Iterator

import httpx

from ..graph.spec import WorkflowSpec
from . import _core
from .errors import RunFailed, RunTimeout, TransportError
from .models import (TERMINAL, DeliveryRecord, EndEvent, Event, HookRecord, MetricsSummary, RunRecord,
                     RunSummary, RunTrace, SpecDiff, ValidationResult, VersionRecord, VersionSummary,
                     WebhookRecord, WorkflowRecord, WorkflowSummary)


class AgentFlow:
    """A client of one AgentFlow server.

        client = AgentFlow("http://127.0.0.1:8000", token=None)
        client.workflows.save(spec)
        state = client.execute("support-triage", "Where is my order?", timeout=60)
    """

    def __init__(self, url: str = "http://127.0.0.1:8000", token: str | None = None, *,
                 timeout: float = _core.DEFAULT_TIMEOUT, http: httpx.Client | None = None):
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._http = http or httpx.Client(base_url=self.url, headers=_core.headers(token), timeout=timeout)
        self.workflows = Workflows(self)
        self.runs = Runs(self)
        self.metrics = Metrics(self)
        self.hooks = Hooks(self)
        self.webhooks = Webhooks(self)

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """One API call: the JSON answer, or an APIError subclass."""
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise TransportError(f"{method} {self.url}{path}: {exc or type(exc).__name__}") from exc
        return _core.check(response)

    def health(self) -> dict[str, Any]:
        return self.request("GET", "/health")

    def execute(self, workflow_id: str, input: str | dict[str, Any] | None = None, *,
                metadata: dict[str, Any] | None = None, timeout: float = 300.0) -> dict[str, Any]:
        """Start a run of the workflow's current version, wait for it, return its final state.

        Raises RunFailed (failed or cancelled, with the run's error) or RunTimeout."""
        return self.runs.submit(workflow_id, input, metadata=metadata).result(timeout)

    def resume(self, run_id: str, node: str, choice: str, values: dict[str, Any] | None = None) -> dict[str, Any]:
        """Answer a run that waits for a person (a `human` node); it then advances."""
        return self.runs.resume(run_id, node, choice, values)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "AgentFlow":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class _Part:
    def __init__(self, client: AgentFlow):
        self._client = client

    def _req(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._client.request(method, path, **kwargs)


class Workflows(_Part):
    def save(self, spec: WorkflowSpec | dict[str, Any]) -> WorkflowRecord:
        """Save (a new version unless identical to the current one)."""
        return WorkflowRecord.model_validate(self._req("POST", "/workflows", json=_core.spec_json(spec)))

    def validate(self, spec: WorkflowSpec | dict[str, Any]) -> ValidationResult:
        """{valid, errors}: an invalid spec is an answer here, not an exception."""
        response = self._client._http.post("/workflows/validate", json=_core.spec_json(spec))
        if response.status_code == 422 and "valid" in response.text:
            return ValidationResult.model_validate(response.json())
        return ValidationResult.model_validate(_core.check(response))

    def get(self, workflow_id: str) -> WorkflowRecord:
        return WorkflowRecord.model_validate(self._req("GET", f"/workflows/{workflow_id}"))

    def list(self, q: str | None = None, page_size: int = 100) -> Iterator[WorkflowSummary]:
        """Every workflow, newest first, fetching page after page."""
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": page_size}
            if q:
                params["q"] = q
            if cursor:
                params["cursor"] = cursor
            page = self._req("GET", "/workflows", params=params)
            for item in page["items"]:
                yield WorkflowSummary.model_validate(item)
            cursor = page.get("next_cursor")
            if not cursor:
                return

    def delete(self, workflow_id: str) -> None:
        self._req("DELETE", f"/workflows/{workflow_id}")

    def versions(self, workflow_id: str) -> list[VersionSummary]:
        """Newest first."""
        return [VersionSummary.model_validate(v) for v in self._req("GET", f"/workflows/{workflow_id}/versions")["items"]]

    def version(self, workflow_id: str, version: int) -> VersionRecord:
        return VersionRecord.model_validate(self._req("GET", f"/workflows/{workflow_id}/versions/{version}"))

    def diff(self, workflow_id: str, a: int, b: int) -> SpecDiff:
        return SpecDiff.model_validate(self._req("GET", f"/workflows/{workflow_id}/versions/{a}/diff/{b}"))

    def rollback(self, workflow_id: str, version: int) -> WorkflowRecord:
        """Save version `version`'s spec as a new version."""
        return WorkflowRecord.model_validate(self._req("POST", f"/workflows/{workflow_id}/rollback",
                                                       json={"version": version}))


class Run:
    """A handle on one run (`client.runs.submit(...)` or `client.runs.attach(run_id)`)."""

    def __init__(self, client: AgentFlow, run_id: str, status: str = "queued"):
        self._client, self.id, self.last_status = client, run_id, status

    def __repr__(self) -> str:
        return f"<Run {self.id} {self.last_status}>"

    def refresh(self) -> RunRecord:
        record = RunRecord.model_validate(self._client.request("GET", f"/runs/{self.id}"))
        self.last_status = record.status
        return record

    def status(self) -> str:
        return self.refresh().status

    def wait(self, timeout: float = 300.0, *, until: tuple[str, ...] = TERMINAL) -> RunRecord:
        """Poll until the run ends (or reaches a status of `until`, e.g. ("waiting",) for a
        run that waits for a person); the record, or RunTimeout."""
        deadline = time.monotonic() + timeout
        for delay in _core.poll_delays():
            record = self.refresh()
            if record.status in until or record.status in TERMINAL:
                return record
            left = deadline - time.monotonic()
            if left <= 0:
                raise RunTimeout(self.id, record.status, timeout)
            time.sleep(min(delay, left))
        raise AssertionError("unreachable")

    def result(self, timeout: float = 300.0) -> dict[str, Any]:
        """The final state; RunFailed when the run failed or was cancelled."""
        record = self.wait(timeout)
        if record.status != "succeeded":
            raise RunFailed(record)
        return record.state or {}

    def cancel(self) -> str:
        """Cancel if queued or running; the status after the call."""
        self.last_status = self._client.request("POST", f"/runs/{self.id}/cancel")["status"]
        return self.last_status

    def resume(self, node: str, choice: str, values: dict[str, Any] | None = None) -> dict[str, Any]:
        """Answer the person's question of a waiting run (see `record.waiting_for`)."""
        return self._client.runs.resume(self.id, node, choice, values)

    def stream(self, timeout: float | None = None) -> Iterator[Event]:
        """Live events as typed objects: StepEvent, TokenEvent, ..., then one EndEvent.
        Steps that already happened are replayed first. `timeout`: seconds to wait for
        the next event (None: as long as it takes; the server pings every 15 s)."""
        parser = _core.SSEParser()
        http = self._client._http
        try:
            with http.stream("GET", f"/runs/{self.id}/events", headers={"Accept": "text/event-stream"},
                             timeout=httpx.Timeout(self._client.timeout, read=timeout)) as response:
                if response.status_code >= 400:
                    response.read()
                    _core.check(response)
                for line in response.iter_lines():
                    event = parser.feed(line)
                    if event is None:
                        continue
                    yield event
                    if isinstance(event, EndEvent):
                        self.last_status = event.status
                        return
        except httpx.TransportError as exc:
            raise TransportError(f"event stream of run {self.id}: {exc or type(exc).__name__}") from exc

    def trace(self) -> RunTrace:
        return RunTrace.model_validate(self._client.request("GET", f"/runs/{self.id}/trace"))

    def rerun(self, from_node: str, state: dict[str, Any] | None = None, *, stream: bool = False) -> "Run":
        """A new run from `from_node` with `state` edits; earlier steps are reused, not paid again."""
        body = self._client.request("POST", f"/runs/{self.id}/rerun",
                                    json={"from_node": from_node, "state": state or {}, "stream": stream})
        return Run(self._client, body["run_id"], body["status"])


class Runs(_Part):
    def submit(self, workflow_id: str, input: str | dict[str, Any] | None = None, *,
               metadata: dict[str, Any] | None = None, stream: bool = False) -> Run:
        """Start a run of the workflow's current version; `stream=True` makes LLM nodes
        send their tokens as TokenEvents on `Run.stream()`."""
        body = self._req("POST", f"/workflows/{workflow_id}/runs",
                         json={"input": _core.run_input(input, metadata), "stream": stream})
        return Run(self._client, body["run_id"], body["status"])

    def resume(self, run_id: str, node: str, choice: str, values: dict[str, Any] | None = None) -> dict[str, Any]:
        """POST /runs/{id}/resume: 409 (Conflict) when the run is not waiting, 422 for a wrong node or choice."""
        return self._client.request("POST", f"/runs/{run_id}/resume",
                                    json={"node": node, "choice": choice, "values": values or {}})

    def attach(self, run_id: str) -> Run:
        return Run(self._client, run_id)

    def get(self, run_id: str) -> RunRecord:
        return RunRecord.model_validate(self._req("GET", f"/runs/{run_id}"))

    def list(self, workflow_id: str | None = None, page_size: int = 100) -> Iterator[RunSummary]:
        """Runs, newest first, page after page."""
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": page_size}
            if workflow_id:
                params["workflow_id"] = workflow_id
            if cursor:
                params["cursor"] = cursor
            page = self._req("GET", "/runs", params=params)
            for item in page["items"]:
                yield RunSummary.model_validate(item)
            cursor = page.get("next_cursor")
            if not cursor:
                return

    def trace(self, run_id: str) -> RunTrace:
        return self.attach(run_id).trace()


class Metrics(_Part):
    def summary(self, start: datetime | str | None = None, end: datetime | str | None = None, *,
                workflow_id: str | None = None, bucket_seconds: int | None = None) -> MetricsSummary:
        params = {k: v for k, v in {"from": _core.iso(start), "to": _core.iso(end), "workflow_id": workflow_id,
                                    "bucket_seconds": bucket_seconds}.items() if v is not None}
        return MetricsSummary.model_validate(self._req("GET", "/metrics/summary", params=params))


class Hooks(_Part):
    """Inbound triggers (POST /hooks/{id} signed with the key in `secret_env`)."""

    def create(self, workflow_id: str, secret_env: str) -> HookRecord:
        return HookRecord.model_validate(self._req("POST", "/hooks", json={"workflow_id": workflow_id,
                                                                             "secret_env": secret_env}))

    def list(self) -> list[HookRecord]:
        return [HookRecord.model_validate(h) for h in self._req("GET", "/hooks")["items"]]

    def get(self, hook_id: str) -> HookRecord:
        return HookRecord.model_validate(self._req("GET", f"/hooks/{hook_id}"))

    def delete(self, hook_id: str) -> None:
        self._req("DELETE", f"/hooks/{hook_id}")


class Webhooks(_Part):
    """Outbound notifications when runs end."""

    def create(self, url: str, events: list[str] | None = None, *, workflow_id: str | None = None,
               secret_env: str | None = None) -> WebhookRecord:
        body: dict[str, Any] = {"url": url, "workflow_id": workflow_id, "secret_env": secret_env}
        if events is not None:
            body["events"] = events
        return WebhookRecord.model_validate(self._req("POST", "/webhooks", json=body))

    def list(self) -> list[WebhookRecord]:
        return [WebhookRecord.model_validate(w) for w in self._req("GET", "/webhooks")["items"]]

    def get(self, webhook_id: str) -> WebhookRecord:
        return WebhookRecord.model_validate(self._req("GET", f"/webhooks/{webhook_id}"))

    def delete(self, webhook_id: str) -> None:
        self._req("DELETE", f"/webhooks/{webhook_id}")

    def deliveries(self, webhook_id: str) -> list[DeliveryRecord]:
        return [DeliveryRecord.model_validate(d) for d in self._req("GET", f"/webhooks/{webhook_id}/deliveries")["items"]]
