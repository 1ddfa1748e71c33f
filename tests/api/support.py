"""Helpers shared by the API tests."""

from __future__ import annotations

import json
import time

from fastapi.testclient import TestClient

from tests.helpers import rules_spec, triage  # noqa: F401  (re-exported)


def wait_run(client: TestClient, run_id: str, timeout: float = 15.0,
             until: tuple[str, ...] = ("succeeded", "failed", "cancelled")) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        record = client.get(f"/runs/{run_id}").json()
        if record["status"] in until:
            return record
        if time.monotonic() > deadline:
            raise AssertionError(f"run {run_id} still {record['status']} after {timeout}s")
        time.sleep(0.03)


def assert_error_shape(response, status: int) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert isinstance(body.get("detail"), str) and body["detail"], body
    assert isinstance(body.get("errors"), list), body
    for problem in body["errors"]:
        assert set(problem) >= {"path", "message"}, problem
    return body


def sse_events(client: TestClient, path: str, limit: int = 1000) -> list[tuple[str, object]]:
    """Read an SSE stream to its end: [(event, parsed data), ...] (pings skipped)."""
    events: list[tuple[str, object]] = []
    kind, data = None, []
    with client.stream("GET", path) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith(":"):
                continue
            if line.startswith("event:"):
                kind = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
            elif line == "" and (kind or data):
                events.append((kind or "message", json.loads("\n".join(data)) if data else None))
                kind, data = None, []
                if len(events) >= limit:
                    break
    return events
