"""Secrets are read at call time, by name, from a secrets provider, and never kept.

A spec names its secrets (`api_key_env`, `dsn_env`, `auth_env`, a hook's `secret_env`); where
the values live is the server's choice, AGENTFLOW_SECRETS_PROVIDER (docs/secrets.md):

- `env` (default): environment variables;
- `file`: one file per secret name in AGENTFLOW_SECRETS_DIR (default /run/secrets), as
  Kubernetes and Docker mount secrets;
- `package.module:factory`: a provider of your own (e.g. Vault), `factory()` returning an
  object with `get(name) -> str | None` (the SecretsProvider protocol);
- a comma-separated list (`file,env`): the first that has the name.

Every value read through `read_secret`, whichever provider gave it, is remembered (in this
process only) so that `redact` can scrub it from log records, error messages and stored states.
"""

from __future__ import annotations

import fnmatch
import functools
import importlib
import logging
import os
import re
import threading
from pathlib import Path
from typing import Any, Mapping, Protocol, runtime_checkable

from .errors import StepError

REDACTED = "***"
_known: set[str] = set()
_lock = threading.Lock()
# Very short values would redact ordinary words; real keys and DSNs are longer.
_MIN_LEN = 6


class MissingSecret(RuntimeError):
    """No provider has the secret; `where` says where it was looked for (never a value)."""

    def __init__(self, where: str):
        super().__init__(f"{where} is not set")
        self.where = where


# ---------------------------------------------------------------- providers


@runtime_checkable
class SecretsProvider(Protocol):
    """Where secret values are read from. `get(name)` is called at every use (a rotated
    secret is picked up without a restart) and returns the value, or None when it has none;
    it must not log or cache values in clear beyond what its backend needs. `describe(name)`
    (optional) says where the name was looked for, for error messages."""

    def get(self, name: str) -> str | None: ...


class EnvProvider:
    """Environment variables (the default)."""

    def __init__(self, env: Mapping[str, str] | None = None):
        self.env = env

    def get(self, name: str) -> str | None:
        return (self.env if self.env is not None else os.environ).get(name) or None

    def describe(self, name: str) -> str:
        return f"environment variable {name}"


# a secret's name is one path component: never `..`, a slash or a hidden file
_FILE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,254}$")
_MAX_FILE_BYTES = 1 << 20


class FileProvider:
    """One file per secret, named like the secret, in `directory`: Kubernetes secret volumes
    and Docker/Compose secrets (/run/secrets/<name>). A trailing newline is not part of the
    value (editors and `echo` add one)."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)

    def path(self, name: str) -> Path:
        if not _FILE_NAME.match(name) or ".." in name:
            raise SecretNotAllowed(f"secret name {name!r} cannot name a file in {self.directory}")
        return self.directory / name

    def get(self, name: str) -> str | None:
        path = self.path(name)
        try:
            with open(path, "rb") as f:
                raw = f.read(_MAX_FILE_BYTES + 1)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:  # unreadable (permissions, a directory): say so, never guess
            raise MissingSecret(f"secret file {path} (unreadable: {exc.strerror or type(exc).__name__})") from None
        if len(raw) > _MAX_FILE_BYTES:
            raise MissingSecret(f"secret file {path} (larger than {_MAX_FILE_BYTES} bytes)")
        return raw.decode("utf-8").rstrip("\r\n") or None

    def describe(self, name: str) -> str:
        return f"secret file {self.directory / name}"


class ChainProvider:
    """The first of several providers that has the name (`file,env`)."""

    def __init__(self, providers: list[Any]):
        self.providers = providers

    def get(self, name: str) -> str | None:
        for provider in self.providers:
            value = provider.get(name)
            if value:
                return value
        return None

    def describe(self, name: str) -> str:
        return " or ".join(describe(p, name) for p in self.providers)


def describe(provider: Any, name: str) -> str:
    how = getattr(provider, "describe", None)
    return how(name) if callable(how) else f"secret {name} ({type(provider).__name__})"


@functools.lru_cache(maxsize=8)
def _configured(kind: str, directory: str) -> Any:
    parts = [p.strip() for p in kind.split(",") if p.strip()] or ["env"]
    providers = []
    for part in parts:
        if part == "env":
            providers.append(EnvProvider())
        elif part == "file":
            providers.append(FileProvider(directory))
        elif ":" in part:
            module, _, attr = part.partition(":")
            provider = getattr(importlib.import_module(module), attr)()
            if not isinstance(provider, SecretsProvider):
                raise TypeError(f"AGENTFLOW_SECRETS_PROVIDER {part}: {type(provider).__name__} has no get(name)")
            providers.append(provider)
        else:
            raise ValueError(f"AGENTFLOW_SECRETS_PROVIDER: unknown provider {part!r} "
                             "(env, file, package.module:factory, or a comma-separated list)")
    return providers[0] if len(providers) == 1 else ChainProvider(providers)


def secrets_provider(env: Mapping[str, str] | None = None) -> Any:
    """The configured provider. `env` (a run's RunContext.env) stands in for os.environ
    where the provider reads the environment."""
    from ..settings import get_settings

    settings = get_settings()
    provider = _configured(settings.secrets_provider, str(settings.secrets_dir))
    if env is None or env is os.environ:
        return provider
    if isinstance(provider, EnvProvider):
        return EnvProvider(env)
    if isinstance(provider, ChainProvider):
        return ChainProvider([EnvProvider(env) if isinstance(p, EnvProvider) else p for p in provider.providers])
    return provider


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
    """The value of the secret a spec names, from the configured provider; remembered for
    redaction before anyone sees it. Missing: MissingSecret naming where it was looked for
    (when `required`), else None."""
    if not env_name:
        return None
    check_env_name(env_name)
    provider = secrets_provider(env)
    value = provider.get(env_name)
    if not value:
        if required:
            raise MissingSecret(describe(provider, env_name))
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
