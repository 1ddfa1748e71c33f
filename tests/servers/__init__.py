"""Real HTTP servers for tests and demos, on 127.0.0.1 and a free port, in a thread.

`RecordingServer` is the shared base: it records every request (arrival time, method,
path, query, headers, JSON body), can delay or fail requests on purpose, and handles
requests concurrently (ThreadingHTTPServer, no extra dependency). Subclasses implement
`handle(call) -> Reply`.

    with OpenAIServer() as srv:          # tests/servers/openai_server.py
        srv.fail_next(1, status=429, retry_after=1)
        ... srv.base_url ... srv.calls ...
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterable
from urllib.parse import parse_qsl, urlsplit

__all__ = ["RecordedCall", "Reply", "RecordingServer"]


@dataclass
class RecordedCall:
    time: float                 # time.time() when the request arrived
    method: str
    path: str                   # without the query string
    query: dict[str, str]
    headers: dict[str, str]     # lower-case names
    json: Any                   # parsed body, or None
    body: bytes = b""
    index: int = 0              # 1-based arrival order
    client: str = ""            # the caller's IP address
    answered: float | None = None  # time.time() once the answer was written (None: not yet)


@dataclass
class Reply:
    status: int = 200
    body: Any = None            # dict/list -> JSON, str -> text/plain, bytes -> as is
    headers: dict[str, str] = field(default_factory=dict)
    stream: Iterable[bytes] | None = None   # sent with chunked transfer encoding
    content_type: str | None = None


class _Fault:
    def __init__(self, status: int, retry_after: float | str | None, remaining: int | None = None,
                 every: int | None = None):
        self.status, self.retry_after, self.remaining, self.every = status, retry_after, remaining, every


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like real APIs
    server_version = "AgentflowTestServer/1.0"

    def _any(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        self.server.app._serve(self, raw)  # type: ignore[attr-defined]

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _any

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass


class RecordingServer:
    """Base class: start/stop, request log, delays and injected failures."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, delay: float = 0.0):
        self.host, self._port = host, port
        self.delay = delay                 # seconds slept before answering each request
        self._lock = threading.Lock()
        self._calls: list[RecordedCall] = []
        self._faults: list[_Fault] = []
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ lifecycle

    def start(self):
        httpd = ThreadingHTTPServer((self.host, self._port), _Handler)
        httpd.daemon_threads = True
        httpd.block_on_close = False
        httpd.app = self  # type: ignore[attr-defined]
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"{type(self).__name__}:{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def serve_forever(self) -> None:
        """Blocking; for `python -m tests.servers.<module>`."""
        if self._httpd is None:
            self.start()
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            self.stop()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._httpd.server_address[1] if self._httpd else self._port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # ------------------------------------------------------------ inspection

    @property
    def calls(self) -> list[RecordedCall]:
        with self._lock:
            return list(self._calls)

    @property
    def call_count(self) -> int:
        with self._lock:
            return len(self._calls)

    def calls_to(self, path: str) -> list[RecordedCall]:
        return [c for c in self.calls if c.path == path]

    def reset(self) -> None:
        """Forget recorded calls and faults."""
        with self._lock:
            self._calls.clear()
            self._faults.clear()

    # ------------------------------------------------------------ fault injection

    def fail_next(self, n: int = 1, status: int = 500, retry_after: float | str | None = None) -> None:
        """The next `n` faultable requests answer `status` (with Retry-After if given)."""
        with self._lock:
            self._faults.append(_Fault(status, retry_after, remaining=n))

    def fail_every(self, k: int, status: int = 500, retry_after: float | str | None = None) -> None:
        """Every k-th faultable request (by arrival order) answers `status`."""
        with self._lock:
            self._faults.append(_Fault(status, retry_after, every=k))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def faultable(self, call: RecordedCall) -> bool:
        """Which requests injected faults apply to (subclasses narrow this)."""
        return True

    def _pick_fault(self, call: RecordedCall) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.remaining is not None and fault.remaining > 0:
                    fault.remaining -= 1
                    return fault
                if fault.every and call.index % fault.every == 0:
                    return fault
            self._faults = [f for f in self._faults if f.every or (f.remaining or 0) > 0]
        return None

    # ------------------------------------------------------------ to override

    def handle(self, call: RecordedCall) -> Reply:
        raise NotImplementedError

    def error_reply(self, status: int, message: str, call: RecordedCall | None = None) -> Reply:
        return Reply(status, {"error": {"message": message, "status": status}})

    # ------------------------------------------------------------ plumbing

    def _serve(self, h: _Handler, raw: bytes) -> None:
        split = urlsplit(h.path)
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        with self._lock:
            call = RecordedCall(time.time(), h.command, split.path, dict(parse_qsl(split.query)),
                                {k.lower(): v for k, v in h.headers.items()}, body, raw,
                                index=len(self._calls) + 1, client=h.client_address[0])
            self._calls.append(call)
        if self.delay:
            time.sleep(self.delay)
        fault = self._pick_fault(call) if self.faultable(call) else None
        if fault is not None:
            reply = self.error_reply(fault.status, f"injected failure ({fault.status})", call)
            if fault.retry_after is not None:
                reply.headers["Retry-After"] = str(fault.retry_after)
        else:
            try:
                reply = self.handle(call)
            except Exception as exc:  # a bug in a test responder: answer 500, keep serving
                reply = self.error_reply(500, f"test server error: {type(exc).__name__}: {exc}", call)
        try:
            self._write(h, reply)
            call.answered = time.time()
        except (BrokenPipeError, ConnectionResetError):
            h.close_connection = True  # the client gave up (e.g. its timeout)

    @staticmethod
    def _write(h: _Handler, reply: Reply) -> None:
        h.send_response(reply.status)
        for name, value in reply.headers.items():
            h.send_header(name, value)
        if reply.stream is not None:
            h.send_header("Content-Type", reply.content_type or "text/event-stream")
            h.send_header("Cache-Control", "no-cache")
            h.send_header("Transfer-Encoding", "chunked")
            h.end_headers()
            for chunk in reply.stream:
                if chunk:
                    h.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    h.wfile.flush()
            h.wfile.write(b"0\r\n\r\n")
            h.wfile.flush()
            return
        body, ctype = reply.body, reply.content_type
        if isinstance(body, (dict, list)):
            data, ctype = json.dumps(body).encode(), ctype or "application/json"
        elif isinstance(body, str):
            data, ctype = body.encode(), ctype or "text/plain; charset=utf-8"
        elif body is None:
            data = b""
        else:
            data = bytes(body)
        if ctype:
            h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(data)
