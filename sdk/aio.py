"""The asyncio client: `AsyncAgentFlow(url, token=None)`, the same API as AgentFlow, awaited.
The endpoints are resources.py's: here `call` returns an awaitable, `pages` an async iterator."""

from __future__ import annotations

import asyncio
import time
from typing import Any, AsyncIterator

import httpx

from . import _core
from .errors import RunFailed, RunTimeout
from .models import TERMINAL, EndEvent, Event, RunRecord
from .resources import Hooks, Metrics, RunHandle, Runs, Webhooks, Workflows


class AsyncAgentFlow:
    """    async with AsyncAgentFlow("http://127.0.0.1:8000") as client:
            state = await client.execute("support-triage", "hello")
    """

    def __init__(self, url: str = "http://127.0.0.1:8000", token: str | None = None, *,
                 timeout: float = _core.DEFAULT_TIMEOUT, http: httpx.AsyncClient | None = None):
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._http = http or httpx.AsyncClient(base_url=self.url, headers=_core.headers(token), timeout=timeout)
        self.workflows = Workflows(self)
        self.runs = Runs(self)
        self.metrics = Metrics(self)
        self.hooks = Hooks(self)
        self.webhooks = Webhooks(self)

    async def call(self, call: _core.Call) -> Any:
        try:
            response = await self._http.request(call.method, call.path, **call.options)
        except httpx.TransportError as exc:
            raise _core.transport_error(f"{call.method} {self.url}{call.path}", exc) from exc
        return call.parse(call.read(response))

    async def request(self, method: str, path: str, **kwargs: Any) -> Any:
        return await self.call(_core.Call(method, path, kwargs))

    async def pages(self, path: str, filters: dict[str, Any], model, page_size: int) -> AsyncIterator[Any]:
        cursor = None
        while True:
            page = await self.request("GET", path, params=_core.page_params(page_size, cursor, filters))
            for item in page["items"]:
                yield model.model_validate(item)
            cursor = page.get("next_cursor")
            if not cursor:
                return

    def run(self, run_id: str, status: str = "queued") -> "AsyncRun":
        return AsyncRun(self, run_id, status)

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


class AsyncRun(RunHandle):
    """A run of the async client: `await run.refresh()` etc. (resources.py), and waiting
    and streaming here."""

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

    async def stream(self, timeout: float | None = None) -> AsyncIterator[Event]:
        parser = _core.SSEParser()
        try:
            async with self._client._http.stream("GET", f"/runs/{self.id}/events", headers=_core.SSE_HEADERS,
                                                 timeout=httpx.Timeout(self._client.timeout, read=timeout)) as response:
                if response.status_code >= 400:
                    await response.aread()
                    _core.check(response)
                async for line in response.aiter_lines():
                    event = parser.feed(line)
                    if event is not None:
                        yield event
                        if isinstance(event, EndEvent):
                            self.last_status = event.status
                            return
        except httpx.TransportError as exc:
            raise _core.transport_error(f"event stream of run {self.id}", exc) from exc
