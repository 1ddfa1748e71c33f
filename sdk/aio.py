"""The asyncio client: `AsyncAgentFlow(url, token=None)`, the same API as AgentFlow, awaited."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Any, AsyncIterator

import httpx

from ..graph.spec import WorkflowSpec
from . import _core
from .errors import RunFailed, RunTimeout, TransportError
from .models import (TERMINAL, DeliveryRecord, EndEvent, Event, HookRecord, MetricsSummary, RunRecord,
                     RunSummary, RunTrace, SpecDiff, ValidationResult, VersionRecord, VersionSummary,
                     WebhookRecord, WorkflowRecord, WorkflowSummary)


class AsyncAgentFlow:
    """    async with AsyncAgentFlow("http://127.0.0.1:8000") as client:
            state = await client.execute("support-triage", "hello")
    """

    def __init__(self, url: str = "http://127.0.0.1:8000", token: str | None = None, *,
                 timeout: float = _core.DEFAULT_TIMEOUT, http: httpx.AsyncClient | None = None):
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._http = http or httpx.AsyncClient(base_url=self.url, headers=_core.headers(token), timeout=timeout)
        self.workflows = AsyncWorkflows(self)
        self.runs = AsyncRuns(self)
        self.metrics = AsyncMetrics(self)
        self.hooks = AsyncHooks(self)
        self.webhooks = AsyncWebhooks(self)

    async def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise TransportError(f"{method} {self.url}{path}: {exc or type(exc).__name__}") from exc
        return _core.check(response)

    async def health(self) -> dict[str, Any]:
        return await self.request("GET", "/health")

    async def execute(self, workflow_id: str, input: str | dict[str, Any] | None = None, *,
                      metadata: dict[str, Any] | None = None, timeout: float = 300.0) -> dict[str, Any]:
        run = await self.runs.submit(workflow_id, input, metadata=metadata)
        return await run.result(timeout)

    async def resume(self, run_id: str, node: str, choice: str, values: dict[str, Any] | None = None) -> dict[str, Any]:
        """Answer a run that waits for a person (a `human` node); it then advances."""
        return await self.runs.resume(run_id, node, choice, values)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> "AsyncAgentFlow":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()


class _Part:
    def __init__(self, client: AsyncAgentFlow):
        self._client = client

    async def _req(self, method: str, path: str, **kwargs: Any) -> Any:
        return await self._client.request(method, path, **kwargs)


class AsyncWorkflows(_Part):
    async def save(self, spec: WorkflowSpec | dict[str, Any]) -> WorkflowRecord:
        return WorkflowRecord.model_validate(await self._req("POST", "/workflows", json=_core.spec_json(spec)))

    async def validate(self, spec: WorkflowSpec | dict[str, Any]) -> ValidationResult:
        response = await self._client._http.post("/workflows/validate", json=_core.spec_json(spec))
        if response.status_code == 422 and "valid" in response.text:
            return ValidationResult.model_validate(response.json())
        return ValidationResult.model_validate(_core.check(response))

    async def get(self, workflow_id: str) -> WorkflowRecord:
        return WorkflowRecord.model_validate(await self._req("GET", f"/workflows/{workflow_id}"))

    async def list(self, q: str | None = None, page_size: int = 100) -> AsyncIterator[WorkflowSummary]:
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": page_size}
            if q:
                params["q"] = q
            if cursor:
                params["cursor"] = cursor
            page = await self._req("GET", "/workflows", params=params)
            for item in page["items"]:
                yield WorkflowSummary.model_validate(item)
            cursor = page.get("next_cursor")
            if not cursor:
                return

    async def delete(self, workflow_id: str) -> None:
        await self._req("DELETE", f"/workflows/{workflow_id}")

    async def versions(self, workflow_id: str) -> list[VersionSummary]:
        body = await self._req("GET", f"/workflows/{workflow_id}/versions")
        return [VersionSummary.model_validate(v) for v in body["items"]]

    async def version(self, workflow_id: str, version: int) -> VersionRecord:
        return VersionRecord.model_validate(await self._req("GET", f"/workflows/{workflow_id}/versions/{version}"))

    async def diff(self, workflow_id: str, a: int, b: int) -> SpecDiff:
        return SpecDiff.model_validate(await self._req("GET", f"/workflows/{workflow_id}/versions/{a}/diff/{b}"))

    async def rollback(self, workflow_id: str, version: int) -> WorkflowRecord:
        return WorkflowRecord.model_validate(await self._req("POST", f"/workflows/{workflow_id}/rollback",
                                                             json={"version": version}))


class AsyncRun:
    def __init__(self, client: AsyncAgentFlow, run_id: str, status: str = "queued"):
        self._client, self.id, self.last_status = client, run_id, status

    def __repr__(self) -> str:
        return f"<AsyncRun {self.id} {self.last_status}>"

    async def refresh(self) -> RunRecord:
        record = RunRecord.model_validate(await self._client.request("GET", f"/runs/{self.id}"))
        self.last_status = record.status
        return record

    async def status(self) -> str:
        return (await self.refresh()).status

    async def wait(self, timeout: float = 300.0, *, until: tuple[str, ...] = TERMINAL) -> RunRecord:
        deadline = time.monotonic() + timeout
        for delay in _core.poll_delays():
            record = await self.refresh()
            if record.status in until or record.status in TERMINAL:
                return record
            left = deadline - time.monotonic()
            if left <= 0:
                raise RunTimeout(self.id, record.status, timeout)
            await asyncio.sleep(min(delay, left))
        raise AssertionError("unreachable")

    async def result(self, timeout: float = 300.0) -> dict[str, Any]:
        record = await self.wait(timeout)
        if record.status != "succeeded":
            raise RunFailed(record)
        return record.state or {}

    async def cancel(self) -> str:
        self.last_status = (await self._client.request("POST", f"/runs/{self.id}/cancel"))["status"]
        return self.last_status

    async def resume(self, node: str, choice: str, values: dict[str, Any] | None = None) -> dict[str, Any]:
        return await self._client.runs.resume(self.id, node, choice, values)

    async def stream(self, timeout: float | None = None) -> AsyncIterator[Event]:
        parser = _core.SSEParser()
        http = self._client._http
        try:
            async with http.stream("GET", f"/runs/{self.id}/events", headers={"Accept": "text/event-stream"},
                                   timeout=httpx.Timeout(self._client.timeout, read=timeout)) as response:
                if response.status_code >= 400:
                    await response.aread()
                    _core.check(response)
                async for line in response.aiter_lines():
                    event = parser.feed(line)
                    if event is None:
                        continue
                    yield event
                    if isinstance(event, EndEvent):
                        self.last_status = event.status
                        return
        except httpx.TransportError as exc:
            raise TransportError(f"event stream of run {self.id}: {exc or type(exc).__name__}") from exc

    async def trace(self) -> RunTrace:
        return RunTrace.model_validate(await self._client.request("GET", f"/runs/{self.id}/trace"))

    async def rerun(self, from_node: str, state: dict[str, Any] | None = None, *, stream: bool = False) -> "AsyncRun":
        body = await self._client.request("POST", f"/runs/{self.id}/rerun",
                                          json={"from_node": from_node, "state": state or {}, "stream": stream})
        return AsyncRun(self._client, body["run_id"], body["status"])


class AsyncRuns(_Part):
    async def submit(self, workflow_id: str, input: str | dict[str, Any] | None = None, *,
                     metadata: dict[str, Any] | None = None, stream: bool = False) -> AsyncRun:
        body = await self._req("POST", f"/workflows/{workflow_id}/runs",
                               json={"input": _core.run_input(input, metadata), "stream": stream})
        return AsyncRun(self._client, body["run_id"], body["status"])

    def attach(self, run_id: str) -> AsyncRun:
        return AsyncRun(self._client, run_id)

    async def resume(self, run_id: str, node: str, choice: str, values: dict[str, Any] | None = None) -> dict[str, Any]:
        return await self._client.request("POST", f"/runs/{run_id}/resume",
                                          json={"node": node, "choice": choice, "values": values or {}})

    async def get(self, run_id: str) -> RunRecord:
        return RunRecord.model_validate(await self._req("GET", f"/runs/{run_id}"))

    async def list(self, workflow_id: str | None = None, page_size: int = 100) -> AsyncIterator[RunSummary]:
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": page_size}
            if workflow_id:
                params["workflow_id"] = workflow_id
            if cursor:
                params["cursor"] = cursor
            page = await self._req("GET", "/runs", params=params)
            for item in page["items"]:
                yield RunSummary.model_validate(item)
            cursor = page.get("next_cursor")
            if not cursor:
                return

    async def trace(self, run_id: str) -> RunTrace:
        return await self.attach(run_id).trace()


class AsyncMetrics(_Part):
    async def summary(self, start: datetime | str | None = None, end: datetime | str | None = None, *,
                      workflow_id: str | None = None, bucket_seconds: int | None = None) -> MetricsSummary:
        params = {k: v for k, v in {"from": _core.iso(start), "to": _core.iso(end), "workflow_id": workflow_id,
                                    "bucket_seconds": bucket_seconds}.items() if v is not None}
        return MetricsSummary.model_validate(await self._req("GET", "/metrics/summary", params=params))


class AsyncHooks(_Part):
    async def create(self, workflow_id: str, secret_env: str) -> HookRecord:
        return HookRecord.model_validate(await self._req("POST", "/hooks", json={"workflow_id": workflow_id,
                                                                                   "secret_env": secret_env}))

    async def list(self) -> list[HookRecord]:
        return [HookRecord.model_validate(h) for h in (await self._req("GET", "/hooks"))["items"]]

    async def get(self, hook_id: str) -> HookRecord:
        return HookRecord.model_validate(await self._req("GET", f"/hooks/{hook_id}"))

    async def delete(self, hook_id: str) -> None:
        await self._req("DELETE", f"/hooks/{hook_id}")


class AsyncWebhooks(_Part):
    async def create(self, url: str, events: list[str] | None = None, *, workflow_id: str | None = None,
                     secret_env: str | None = None) -> WebhookRecord:
        body: dict[str, Any] = {"url": url, "workflow_id": workflow_id, "secret_env": secret_env}
        if events is not None:
            body["events"] = events
        return WebhookRecord.model_validate(await self._req("POST", "/webhooks", json=body))

    async def list(self) -> list[WebhookRecord]:
        return [WebhookRecord.model_validate(w) for w in (await self._req("GET", "/webhooks"))["items"]]

    async def get(self, webhook_id: str) -> WebhookRecord:
        return WebhookRecord.model_validate(await self._req("GET", f"/webhooks/{webhook_id}"))

    async def delete(self, webhook_id: str) -> None:
        await self._req("DELETE", f"/webhooks/{webhook_id}")

    async def deliveries(self, webhook_id: str) -> list[DeliveryRecord]:
        body = await self._req("GET", f"/webhooks/{webhook_id}/deliveries")
        return [DeliveryRecord.model_validate(d) for d in body["items"]]
