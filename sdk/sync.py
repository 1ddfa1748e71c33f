"""The blocking client: `AgentFlow(url, token=None)`. The endpoints are resources.py's."""

from __future__ import annotations

import time
from typing import Any, Iterator

import httpx

from . import _core
from .errors import RunFailed, RunTimeout
from .models import TERMINAL, EndEvent, Event, RunRecord
from .resources import Hooks, Metrics, RunHandle, Runs, Webhooks, Workflows


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

    def call(self, call: _core.Call) -> Any:
        try:
            response = self._http.request(call.method, call.path, **call.options)
        except httpx.TransportError as exc:
            raise _core.transport_error(f"{call.method} {self.url}{call.path}", exc) from exc
        return call.parse(call.read(response))

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """One API call: the JSON answer, or an APIError subclass."""
        return self.call(_core.Call(method, path, kwargs))

    def pages(self, path: str, filters: dict[str, Any], model, page_size: int) -> Iterator[Any]:
        cursor = None
        while True:
            page = self.request("GET", path, params=_core.page_params(page_size, cursor, filters))
            for item in page["items"]:
                yield model.model_validate(item)
            cursor = page.get("next_cursor")
            if not cursor:
                return

    def run(self, run_id: str, status: str = "queued") -> "Run":
        return Run(self, run_id, status)

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


class Run(RunHandle):
    """A run of the blocking client: refresh, status, cancel, trace, rerun (resources.py),
    and waiting and streaming here."""

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

    def stream(self, timeout: float | None = None) -> Iterator[Event]:
        """Live events as typed objects: StepEvent, TokenEvent, ..., then one EndEvent.
        Steps that already happened are replayed first. `timeout`: seconds to wait for
        the next event (None: as long as it takes; the server pings every 15 s)."""
        parser = _core.SSEParser()
        try:
            with self._client._http.stream("GET", f"/runs/{self.id}/events", headers=_core.SSE_HEADERS,
                                           timeout=httpx.Timeout(self._client.timeout, read=timeout)) as response:
                if response.status_code >= 400:
                    response.read()
                    _core.check(response)
                for line in response.iter_lines():
                    event = parser.feed(line)
                    if event is not None:
                        yield event
                        if isinstance(event, EndEvent):
                            self.last_status = event.status
                            return
        except httpx.TransportError as exc:
            raise _core.transport_error(f"event stream of run {self.id}", exc) from exc
