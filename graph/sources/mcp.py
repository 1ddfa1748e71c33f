"""MCP servers (contract section 8): list and call their tools through the official `mcp` SDK.

The SDK is async and its connections hold anyio cancel scopes that must be entered and
left by one task, while nodes are sync code on worker threads (sometimes a thread whose
own loop is running). So a `Connection` owns a private event loop on a thread of its own:
one task there opens the client and keeps it until `close()`, and each call is a
coroutine sent to that loop. An `llm` node keeps its connections for its whole
function-calling loop, so a stdio server is started once a step, not once a call.

Secrets are named, never held: a stdio server gets only the SDK's safe default
environment plus the variables `env` maps (server variable -> our variable's name), and
an http server gets `auth_env`'s value as a Bearer token. Which executables a spec may
start is the operator's choice (AGENTFLOW_MCP_STDIO_COMMANDS): a spec that could run any
command would hand a shell on the worker to whoever may save a workflow.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import shutil
import sys
import threading
from dataclasses import dataclass, field
from typing import Any, Mapping
from urllib.parse import urlsplit

from ..errors import BlockedAddressError, ProviderError, StepError
from ..secrets import MissingSecret, read_secret, redact

DEFAULT_TIMEOUT = 60.0
CONNECT_TIMEOUT = 30.0
MAX_TOOL_TEXT = 1_000_000  # characters of one tool result kept in the state


@dataclass
class Tool:
    name: str
    description: str
    input_schema: dict[str, Any]


@dataclass
class ToolResult:
    text: str
    structured: Any = None
    is_error: bool = False
    content: list[dict] = field(default_factory=list)

    @property
    def value(self) -> Any:
        """What a `tool` node writes: the structured result when the tool gave one, else its text."""
        return self.structured if self.structured is not None else self.text


def stdio_commands_allowed() -> list[str]:
    from ...settings import get_settings

    return [c.strip() for c in (get_settings().mcp_stdio_commands or "").split(",") if c.strip()]


def check_command(source: Any) -> str:
    """The executable a stdio source may start, or a StepError saying how to allow it."""
    command = source.command or ""
    allowed = stdio_commands_allowed()
    resolved = shutil.which(command) or command
    if "*" in allowed or command in allowed or resolved in allowed or \
            any(os.path.realpath(resolved) == os.path.realpath(shutil.which(a) or a) for a in allowed):
        return command
    raise StepError(f"mcp source '{source.id}' would start {command!r}, which is not in "
                    "AGENTFLOW_MCP_STDIO_COMMANDS (comma-separated executables the operator allows)")


def _label(source: Any) -> str:
    return f"mcp source '{source.id}'"


def _server_target(source: Any, env: Mapping[str, str] | None):
    """What mcp.Client connects to, plus the httpx2 client to close (http)."""
    from mcp import StdioServerParameters, stdio_client
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared._httpx_utils import create_mcp_http_client

    try:
        if source.transport == "stdio":
            if not source.command:
                raise StepError(f"{_label(source)} needs a command (transport stdio)")
            command = check_command(source)
            server_env = {var: read_secret(ours, env) for var, ours in source.env.items()}
            params = StdioServerParameters(command=command, args=list(source.args), env=server_env)
            return stdio_client(params, errlog=_errlog()), None
        if not source.url:
            raise StepError(f"{_label(source)} needs a url (transport http)")
        parts = urlsplit(source.url)
        if not source.allow_private:
            from .http import check_host

            check_host(parts.hostname or "", parts.port)
        headers = {}
        if source.auth_env:
            headers["Authorization"] = f"Bearer {read_secret(source.auth_env, env)}"
        http = create_mcp_http_client(headers=headers)
        return streamable_http_client(source.url, http_client=http), http
    except MissingSecret as exc:
        raise StepError(f"{_label(source)}: {exc}") from None


def _errlog():
    """Where a stdio server's stderr goes: ours, when it is a real file (a Celery worker
    replaces sys.stderr with a logging proxy that has no file descriptor)."""
    for stream in (sys.stderr, sys.__stderr__):
        try:
            if stream is not None and stream.fileno() >= 0:
                return stream
        except (AttributeError, OSError, ValueError):
            continue
    if "devnull" not in _DEVNULL:
        _DEVNULL["devnull"] = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process
    return _DEVNULL["devnull"]


_DEVNULL: dict[str, Any] = {}


def _error(source: Any, exc: BaseException) -> StepError:
    """An SDK or transport exception -> a StepError a person can act on, scrubbed."""
    if isinstance(exc, StepError):
        return exc
    if isinstance(exc, BaseExceptionGroup):  # anyio task groups wrap what went wrong
        inner = exc.exceptions[0] if exc.exceptions else exc
        return _error(source, inner)
    try:
        from mcp.shared.exceptions import MCPError
    except ImportError:  # pragma: no cover - mcp is a dependency
        MCPError = ()  # type: ignore[assignment]
    if isinstance(exc, MCPError):
        return ProviderError(redact(f"{_label(source)} answered with an error: {exc}"), retryable=False)
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError, concurrent.futures.TimeoutError)):
        return ProviderError(f"{_label(source)} did not answer in time", retryable=True)
    text = str(exc) or type(exc).__name__
    return ProviderError(redact(f"could not talk to {_label(source)}: {type(exc).__name__}: {text}"),
                         retryable=isinstance(exc, (OSError, ConnectionError, EOFError)) or
                         type(exc).__module__.startswith(("httpx", "httpcore", "anyio")))


def _result(raw: Any) -> ToolResult:
    parts: list[str] = []
    content: list[dict] = []
    for block in raw.content or []:
        data = block.model_dump(mode="json", exclude_none=True) if hasattr(block, "model_dump") else dict(block)
        content.append(data)
        if data.get("type") == "text":
            parts.append(data.get("text", ""))
        else:
            parts.append(f"[{data.get('type', 'content')}]")
    text = "\n".join(parts)
    if len(text) > MAX_TOOL_TEXT:
        text = text[:MAX_TOOL_TEXT] + "..."
    structured = getattr(raw, "structured_content", None)
    if structured is None:
        structured = getattr(raw, "structuredContent", None)
    is_error = bool(getattr(raw, "is_error", None) or getattr(raw, "isError", None))
    return ToolResult(text=text, structured=structured, is_error=is_error, content=content)


class Connection:
    """One open MCP client session, usable from sync code on any thread (see module doc)."""

    def __init__(self, source: Any, env: Mapping[str, str] | None = None, timeout: float = DEFAULT_TIMEOUT):
        self.source = source
        self.timeout = timeout
        self._target, self._http = _server_target(source, env)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"mcp-{source.id}", daemon=True)
        self._client: Any = None
        self._stop: asyncio.Event | None = None
        self._holder: concurrent.futures.Future | None = None
        self._tools: list[Tool] | None = None

    # ------------------------------------------------------------ life

    def open(self) -> "Connection":
        self._thread.start()
        ready: concurrent.futures.Future = concurrent.futures.Future()
        self._holder = asyncio.run_coroutine_threadsafe(self._hold(ready), self._loop)
        try:
            ready.result(timeout=min(self.timeout, CONNECT_TIMEOUT) + 5)
        except BaseException as exc:
            self.close()
            raise _error(self.source, exc) from None
        return self

    async def _hold(self, ready: concurrent.futures.Future) -> None:
        from mcp import Client

        self._stop = asyncio.Event()
        try:
            async with asyncio.timeout(min(self.timeout, CONNECT_TIMEOUT)):
                client = Client(self._target, read_timeout_seconds=self.timeout, cache=None)
                await client.__aenter__()
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc)
            return
        self._client = client
        ready.set_result(True)
        try:
            await self._stop.wait()
        finally:
            try:
                await client.__aexit__(None, None, None)
            except BaseException:  # noqa: BLE001 - closing: the server may be gone already
                pass
            if self._http is not None:
                try:
                    await self._http.aclose()
                except BaseException:  # noqa: BLE001
                    pass

    def close(self) -> None:
        if self._thread.is_alive():
            if self._stop is not None:
                self._loop.call_soon_threadsafe(self._stop.set)
            if self._holder is not None:
                try:
                    self._holder.result(timeout=10)
                except BaseException:  # noqa: BLE001 - closing
                    pass
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
        if not self._loop.is_running():
            self._loop.close()

    def __enter__(self) -> "Connection":
        return self.open()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------ calls

    def _run(self, coro, timeout: float):
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout=timeout + 5)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise ProviderError(f"{_label(self.source)} did not answer within {timeout:g} s",
                                retryable=True) from None
        except StepError:
            raise
        except BaseException as exc:
            raise _error(self.source, exc) from None

    def tools(self) -> list[Tool]:
        if self._tools is None:
            async def listing() -> list[Tool]:
                found: list[Tool] = []
                cursor = None
                while True:
                    page = await self._client.list_tools(cursor=cursor)
                    for t in page.tools:
                        schema = getattr(t, "input_schema", None) or getattr(t, "inputSchema", None) or {}
                        found.append(Tool(t.name, t.description or "", dict(schema)))
                    cursor = getattr(page, "next_cursor", None) or getattr(page, "nextCursor", None)
                    if not cursor:
                        return found

            self._tools = self._run(listing(), self.timeout)
        return self._tools

    def call(self, name: str, arguments: dict[str, Any] | None = None,
             timeout: float | None = None) -> ToolResult:
        timeout = timeout or self.timeout
        raw = self._run(self._client.call_tool(name, arguments or {}, read_timeout_seconds=timeout), timeout)
        return _result(raw)


def call_tool(source: Any, name: str, arguments: dict[str, Any], *, env: Mapping[str, str] | None = None,
              timeout: float = DEFAULT_TIMEOUT) -> ToolResult:
    """Connect, call one tool, disconnect (a `tool` node)."""
    with Connection(source, env, timeout) as conn:
        return conn.call(name, arguments, timeout)


__all__ = ["BlockedAddressError", "Connection", "Tool", "ToolResult", "call_tool", "check_command"]
