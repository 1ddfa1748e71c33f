"""What the sync and async clients share: calls as data, bodies, error mapping, SSE
parsing, polling. The endpoints themselves are described once, in resources.py."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Iterator

import httpx

from ..graph.spec import WorkflowSpec
from .errors import TransportError, error_for
from .models import EndEvent, ErrorEvent, Event, StepEvent, TokenEvent

USER_AGENT = "agentflow-python-client"
DEFAULT_TIMEOUT = 30.0
SSE_HEADERS = {"Accept": "text/event-stream"}


def headers(token: str | None) -> dict[str, str]:
    out = {"User-Agent": USER_AGENT, "Accept": "application/json"}
    if token:
        out["Authorization"] = f"Bearer {token}"
    return out


def spec_json(spec: WorkflowSpec | dict[str, Any]) -> dict[str, Any]:
    """A WorkflowSpec model or its JSON as a dict."""
    if isinstance(spec, WorkflowSpec):
        return spec.to_json()
    if isinstance(spec, dict):
        return spec
    raise TypeError(f"a workflow spec must be a WorkflowSpec or a dict, not {type(spec).__name__}")


def run_input(value: str | dict[str, Any] | None, metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    """`"text"` -> {"user_input": "text"}; a dict is used as is; `metadata` is merged in."""
    if value is None:
        data: dict[str, Any] = {}
    elif isinstance(value, str):
        data = {"user_input": value}
    elif isinstance(value, dict):
        data = dict(value)
    else:
        raise TypeError(f"input must be a string or a dict, not {type(value).__name__}")
    if metadata:
        data["metadata"] = {**(data.get("metadata") or {}), **metadata}
    return data


def iso(value: datetime | str | None) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else value


def check(response: httpx.Response) -> Any:
    """The JSON answer, or the APIError the status stands for."""
    if response.status_code >= 400:
        try:
            body = response.json()
        except ValueError:
            body = response.text
        raise error_for(response.status_code, body)
    if response.status_code == 204 or not response.content:
        return None
    return response.json()


def _same(value: Any) -> Any:
    return value


@dataclass(frozen=True)
class Call:
    """One API call as data: the sync client performs it and returns `parse(read(response))`,
    the async client returns an awaitable of the same. `options`: httpx's request arguments
    (params, json, headers...); `read` turns the response into the body (default: the JSON
    answer, or the APIError its status stands for)."""

    method: str
    path: str
    options: dict[str, Any] = field(default_factory=dict)
    parse: Callable[[Any], Any] = _same
    read: Callable[[httpx.Response], Any] = check


def page_params(page_size: int, cursor: str | None, filters: dict[str, Any]) -> dict[str, Any]:
    """The query of one page of a list endpoint (filters that are None or empty left out)."""
    params: dict[str, Any] = {"limit": page_size, **{k: v for k, v in filters.items() if v}}
    if cursor:
        params["cursor"] = cursor
    return params


def transport_error(what: str, exc: Exception) -> TransportError:
    return TransportError(f"{what}: {exc or type(exc).__name__}")


def to_event(kind: str, data: Any) -> Event | None:
    if kind == "step" and isinstance(data, dict):
        return StepEvent.model_validate(data)
    if kind == "token" and isinstance(data, dict):
        return TokenEvent.model_validate(data)
    if kind == "end" and isinstance(data, dict):
        return EndEvent(run=data)
    if kind == "error" and isinstance(data, dict):
        return ErrorEvent.model_validate(data)
    return None  # unknown kinds are skipped: the server may add more


class SSEParser:
    """Server-Sent Events, line by line: `feed(line)` returns an event at each blank line."""

    def __init__(self) -> None:
        self.kind: str | None = None
        self.data: list[str] = []

    def feed(self, line: str) -> Event | None:
        line = line.rstrip("\r")
        if line.startswith(":"):
            return None  # comment / ping
        if line == "":
            if self.kind is None and not self.data:
                return None
            kind, text = self.kind or "message", "\n".join(self.data)
            self.kind, self.data = None, []
            try:
                data = json.loads(text) if text else None
            except ValueError:
                return None
            return to_event(kind, data)
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "event":
            self.kind = value
        elif field == "data":
            self.data.append(value)
        return None


def poll_delays(first: float = 0.05, factor: float = 1.5, most: float = 1.0) -> Iterator[float]:
    delay = first
    while True:
        yield delay
        delay = min(delay * factor, most)
