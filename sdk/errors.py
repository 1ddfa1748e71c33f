"""Exceptions of the AgentFlow client: HTTP errors carry the API's `detail` and `errors`."""

from __future__ import annotations

from typing import Any


class AgentFlowError(Exception):
    """Base class of every client error."""


class TransportError(AgentFlowError):
    """The server could not be reached, or the connection broke."""


class APIError(AgentFlowError):
    """A 4xx/5xx answer: `status`, `detail` (a sentence) and `errors` ([{path, message}])."""

    def __init__(self, status: int, detail: str, errors: list[dict[str, Any]] | None = None,
                 body: Any = None):
        self.status, self.detail, self.errors, self.body = status, detail, list(errors or []), body
        where = "; ".join(f"{e.get('path') or '<body>'}: {e.get('message')}" for e in self.errors[:5])
        super().__init__(f"{status}: {detail}" + (f" [{where}]" if where and where not in detail else ""))


class ValidationFailed(APIError):
    """422: the request (often a workflow spec) is invalid; `errors` lists every problem."""


class NotFound(APIError):
    """404."""


class AuthError(APIError):
    """401 (no or bad token) or 403 (the token's role may not do this)."""


class Conflict(APIError):
    """409: e.g. re-running a run that has not ended."""


class RunFailed(AgentFlowError):
    """The run ended `failed` or `cancelled`; `run` is its record, `error` why."""

    def __init__(self, run: Any):
        self.run = run
        self.run_id = getattr(run, "run_id", None)
        self.status = getattr(run, "status", None)
        self.error = getattr(run, "error", None)
        super().__init__(f"run {self.run_id} {self.status}: {self.error}")


class RunTimeout(AgentFlowError, TimeoutError):
    """The run did not end within the time given; it keeps running on the server."""

    def __init__(self, run_id: str, status: str | None, timeout: float):
        self.run_id, self.status, self.timeout = run_id, status, timeout
        super().__init__(f"run {run_id} still {status} after {timeout:g} s")


def error_for(status: int, body: Any) -> APIError:
    detail, errors = f"HTTP {status}", []
    if isinstance(body, dict):
        detail = str(body.get("detail") or detail)
        raw = body.get("errors")
        if isinstance(raw, list):
            errors = [e for e in raw if isinstance(e, dict)]
    elif isinstance(body, str) and body.strip():
        detail = body.strip()[:500]
    cls = {401: AuthError, 403: AuthError, 404: NotFound, 409: Conflict, 422: ValidationFailed}.get(status, APIError)
    return cls(status, detail, errors, body)
