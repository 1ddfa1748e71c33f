"""Pure ASGI middleware (they do not buffer responses, so SSE streams pass through)."""

from __future__ import annotations

import json
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import metrics
from .errors import BodyTooLarge, error_body


async def _send_json(send: Send, status: int, body: dict) -> None:
    payload = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(payload)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": payload})


class BodyLimitMiddleware:
    """413 for a body over `max_bytes`: by Content-Length up front, else by counting
    the bytes as they stream in (chunked uploads have no Content-Length)."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.max_bytes <= 0:
            await self.app(scope, receive, send)
            return
        declared = None
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await _send_json(send, 400, error_body("invalid Content-Length header"))
                    return
        if declared is not None and declared > self.max_bytes:
            await _send_json(send, 413, error_body(str(BodyTooLarge(self.max_bytes).detail)))
            return

        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, watched_send)
        except BodyTooLarge as exc:
            # Normally the HTTPException handler answers; this covers bodies read outside a route.
            if started:
                raise
            await _send_json(send, 413, error_body(str(exc.detail)))


class MetricsMiddleware:
    """Request count and latency per route template (not per raw path: ids would explode
    the label set). Latency is measured to the start of the response, so a long SSE
    stream counts as fast."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        recorded = False

        def record() -> None:
            nonlocal recorded
            if recorded:
                return
            recorded = True
            metrics.observe_request(scope.get("method", "GET"), _route_label(scope), status,
                                    time.perf_counter() - start)

        async def timed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                record()
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        finally:
            record()


def _route_label(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    if path is None:
        return "unmatched"
    if path in ("", "/") and route.__class__.__name__ == "Mount":
        return "static"
    return path
