"""Secrets are read from environment variables at call time and never kept.

Every value read through `read_secret` is remembered (in this process only) so that
`redact` can scrub it from log records, error messages and stored states.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any, Mapping

REDACTED = "***"
_known: set[str] = set()
_lock = threading.Lock()
# Very short values would redact ordinary words; real keys and DSNs are longer.
_MIN_LEN = 6


class MissingSecret(RuntimeError):
    pass


def remember(value: str | None) -> None:
    if value and len(value) >= _MIN_LEN:
        with _lock:
            _known.add(value)


def read_secret(env_name: str | None, env: Mapping[str, str] | None = None,
                required: bool = True) -> str | None:
    if not env_name:
        return None
    value = (env if env is not None else os.environ).get(env_name)
    if value is None or value == "":
        if required:
            raise MissingSecret(f"environment variable {env_name} is not set")
        return None
    remember(value)
    return value


def redact(value: Any) -> Any:
    """Replace every known secret inside a string or JSON-like value."""
    if not _known:
        return value
    if isinstance(value, str):
        for secret in sorted(_known, key=len, reverse=True):
            if secret in value:
                value = value.replace(secret, REDACTED)
        return value
    if isinstance(value, dict):
        return {k: redact(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact(v) for v in value)
    return value


class RedactingFilter(logging.Filter):
    """Scrubs known secret values from every record that passes through."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _known:
            record.msg = redact(record.getMessage())
            record.args = None
            if record.exc_text:
                record.exc_text = redact(record.exc_text)
        return True


def install_log_redaction(logger: logging.Logger | None = None) -> None:
    target = logger or logging.getLogger()
    if not any(isinstance(f, RedactingFilter) for f in target.filters):
        target.addFilter(RedactingFilter())
    for handler in target.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
