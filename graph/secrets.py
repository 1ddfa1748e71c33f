"""Secrets are read from environment variables at call time and never kept.

Every value read through `read_secret` is remembered (in this process only) so that
`redact` can scrub it from log records, error messages and stored states.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import threading
from typing import Any, Mapping

from .errors import StepError

REDACTED = "***"
_known: set[str] = set()
_lock = threading.Lock()
# Very short values would redact ordinary words; real keys and DSNs are longer.
_MIN_LEN = 6


class MissingSecret(RuntimeError):
    pass


class SecretNotAllowed(StepError):
    """A spec named an environment variable workflows may not read (the server's own keys)."""


# The server's own credentials: a workflow naming one of these (e.g. as an api source's
# auth_env, sent to a host of its choosing) would hand it to whoever wrote the spec.
SERVER_ONLY_ENV = ("AGENTFLOW_JWT_SECRET", "AGENTFLOW_JWT_*", "AGENTFLOW_JWKS_URL", "DATABASE_URL",
                   "REDIS_URL", "CELERY_*", "AGENTFLOW_SECRET_ENV_*")


def _patterns(value: str | None) -> list[str]:
    return [p.strip() for p in (value or "").split(",") if p.strip()]


def check_env_name(env_name: str) -> None:
    """Raise SecretNotAllowed unless workflows may read `env_name`.

    Never: SERVER_ONLY_ENV and the names in AGENTFLOW_SECRET_ENV_DENY (comma-separated
    shell patterns). When AGENTFLOW_SECRET_ENV_ALLOW is set, only the names it matches."""
    name = env_name.upper()
    deny = list(SERVER_ONLY_ENV) + _patterns(os.environ.get("AGENTFLOW_SECRET_ENV_DENY"))
    if any(fnmatch.fnmatchcase(name, p.upper()) for p in deny):
        raise SecretNotAllowed(f"environment variable {env_name} holds a server credential; "
                               "workflows may not read it")
    allow = _patterns(os.environ.get("AGENTFLOW_SECRET_ENV_ALLOW"))
    if allow and not any(fnmatch.fnmatchcase(name, p.upper()) for p in allow):
        raise SecretNotAllowed(f"environment variable {env_name} is not in AGENTFLOW_SECRET_ENV_ALLOW; "
                               "workflows may not read it")


def remember(value: str | None) -> None:
    if value and len(value) >= _MIN_LEN:
        with _lock:
            _known.add(value)


def read_secret(env_name: str | None, env: Mapping[str, str] | None = None,
                required: bool = True) -> str | None:
    if not env_name:
        return None
    check_env_name(env_name)
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
    install_record_redaction()


def _redact_record(record: logging.LogRecord) -> None:
    """Scrub a record as it is made, before any handler (pytest's caplog, uvicorn's own
    handlers, a handler added later) sees it. The arguments are kept when the message
    holds no secret, so formatters that read `record.args` (uvicorn's access log) work."""
    try:
        message = record.getMessage()
    except Exception:  # a broken format string: leave it to logging's own error report
        return
    scrubbed = redact(message)
    if scrubbed != message:
        record.msg, record.args = scrubbed, None
    if record.exc_info and record.exc_info[0] is not None and not record.exc_text:
        text = logging.Formatter().formatException(record.exc_info)
        record.exc_text = redact(text)
    elif record.exc_text:
        record.exc_text = redact(record.exc_text)
    if record.stack_info:
        record.stack_info = redact(record.stack_info)


def install_record_redaction() -> None:
    """Wrap the process's LogRecord factory with `_redact_record` (idempotent)."""
    current = logging.getLogRecordFactory()
    if getattr(current, "_agentflow_redacting", False):
        return

    def factory(*args, **kwargs):
        record = current(*args, **kwargs)
        if _known:
            _redact_record(record)
        return record

    factory._agentflow_redacting = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)
