"""A real MCP server for tests, built with the SDK's own server class (MCPServer, the
FastMCP of mcp 1.x).

Tools: `add(a, b)`, `echo(text)`, `env_value(name)` (a variable of the server's own
environment: what an mcp source's `env` mapping passed it) and `fail(message)` (a tool
error).

    python tests/servers/mcp_tools.py            # stdio (what an mcp source starts)
    with MCPHTTPServer(token="s3cret") as srv:   # streamable HTTP on 127.0.0.1, in a thread
        srv.url                                  # http://127.0.0.1:PORT/mcp
        srv.authorizations                       # Authorization headers it received
"""

from __future__ import annotations

import os
import socket
import threading
import time

from mcp.server.mcpserver import MCPServer


def build_server() -> MCPServer:
    server = MCPServer("agentflow-test-tools")

    @server.tool()
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    @server.tool()
    def echo(text: str) -> str:
        """Say the text back."""
        return f"echo: {text}"

    @server.tool()
    def env_value(name: str) -> str:
        """The value of one of this server's environment variables ('' when unset)."""
        return os.environ.get(name, "")

    @server.tool()
    def fail(message: str = "broken") -> str:
        """Always fails."""
        raise ValueError(message)

    return server


class MCPHTTPServer:
    """The same tools over streamable HTTP (uvicorn on 127.0.0.1), optionally behind a
    Bearer token, in a thread."""

    def __init__(self, token: str | None = None):
        self.token = token
        self.authorizations: list[str] = []
        self.port = _free_port()
        self._server = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def _app(self):
        inner = build_server().streamable_http_app()

        async def app(scope, receive, send):
            if scope["type"] == "http":
                auth = dict(scope.get("headers") or []).get(b"authorization", b"").decode()
                self.authorizations.append(auth)
                if self.token is not None and auth != f"Bearer {self.token}":
                    await send({"type": "http.response.start", "status": 401,
                                "headers": [(b"content-type", b"text/plain")]})
                    await send({"type": "http.response.body", "body": b"unauthorized"})
                    return
            await inner(scope, receive, send)

        return app

    def __enter__(self) -> "MCPHTTPServer":
        import uvicorn

        config = uvicorn.Config(self._app(), host="127.0.0.1", port=self.port, log_level="warning",
                                lifespan="on")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 15
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the MCP test server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


if __name__ == "__main__":
    build_server().run("stdio")
