"""Source adapters: the only modules that speak to model providers, databases and APIs.

Each adapter turns its library's exceptions into `agentflow.graph.errors` types with
messages a person can act on, scrubbed of secrets.
"""

from __future__ import annotations

import email.utils
from http import HTTPStatus
import time
from typing import Any, Mapping

from ..errors import ProviderError
from ..secrets import redact

KIND_LABEL = {"llm": "LLM", "image": "image", "db": "database", "api": "API"}


def status_phrase(status: int) -> str:
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return str(status)


def parse_retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds to wait from `Retry-After` (seconds or an HTTP date) or `retry-after-ms`."""
    if not headers:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - time.time()) if when else None


def status_retryable(status: int) -> bool:
    """429 and 408 are worth retrying; other 4xx are the request's fault."""
    return status in (408, 429) or (status >= 500 and status != 501)


def status_error(kind: str, source_id: str, status: int, detail: Any,
                 headers: Mapping[str, str] | None = None) -> ProviderError:
    """"LLM source 'gpt' answered 429 Too Many Requests: <provider message>"."""
    text = str(detail).strip() if detail not in (None, "") else "(no message)"
    if len(text) > 500:
        text = text[:500] + "..."
    message = redact(f"{KIND_LABEL.get(kind, kind)} source '{source_id}' answered {status_phrase(status)}: {text}")
    return ProviderError(message, status=status, retry_after=parse_retry_after(headers),
                         retryable=status_retryable(status))
