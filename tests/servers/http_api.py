"""A small JSON API for api-node tests and demos.

    with HTTPAPIServer() as api:
        api.url                                  # http://127.0.0.1:PORT

Routes (any method):
  /echo[/...]              -> {"method", "path", "query", "headers", "json"}
  /status/{code}           -> that status, JSON {"status": code}; ?retry_after=N adds Retry-After
  /redirect?to=URL         -> 302 (or ?status=301/303/307/308) to URL
  /redirect/{n}            -> 302 to /redirect/{n-1}; /redirect/0 -> {"redirected": true}
  /slow?s=SECONDS          -> sleeps, then {"slept": s}
  /orders/{customer}       -> JSON list of the customer's orders (`api.orders`, editable)
  /text                    -> text/plain "hello"
With `require_token="t"`, requests whose Authorization is not "Bearer t" get a 401 whose
body quotes the header received (as careless APIs do), to test secret redaction.

Standalone: `python -m tests.servers.http_api --port 8766`.
"""

from __future__ import annotations

import argparse
import copy
import time
from urllib.parse import unquote

from . import RecordedCall, RecordingServer, Reply

DEFAULT_ORDERS = {
    "alice": [{"id": 1, "item": "keyboard", "status": "shipped"},
              {"id": 2, "item": "mouse", "status": "processing"}],
    "bob": [{"id": 3, "item": "monitor", "status": "delivered"}],
}


class HTTPAPIServer(RecordingServer):
    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, delay: float = 0.0,
                 require_token: str | None = None):
        super().__init__(host, port, delay=delay)
        self.orders: dict[str, list[dict]] = copy.deepcopy(DEFAULT_ORDERS)
        self.require_token = require_token

    def handle(self, call: RecordedCall) -> Reply:
        if self.require_token is not None:
            given = call.headers.get("authorization", "")
            if given != f"Bearer {self.require_token}":
                return Reply(401, {"error": f"invalid credentials: {given!r}"})
        parts = [unquote(p) for p in call.path.strip("/").split("/")] if call.path.strip("/") else []
        head = parts[0] if parts else ""
        if head == "echo":
            return Reply(200, {"method": call.method, "path": call.path, "query": call.query,
                               "headers": call.headers, "json": call.json})
        if head == "status" and len(parts) == 2 and parts[1].isdigit():
            code = int(parts[1])
            headers = {"Retry-After": call.query["retry_after"]} if "retry_after" in call.query else {}
            return Reply(code, {"status": code}, headers=headers)
        if head == "redirect" and len(parts) == 2 and parts[1].isdigit():
            n = int(parts[1])
            if n == 0:
                return Reply(200, {"redirected": True})
            return Reply(302, None, headers={"Location": f"/redirect/{n - 1}"})
        if head == "redirect":
            target = call.query.get("to")
            if not target:
                return Reply(400, {"error": "missing ?to="})
            return Reply(int(call.query.get("status", 302)), {"redirect": target}, headers={"Location": target})
        if head == "slow":
            seconds = float(call.query.get("s", 1))
            time.sleep(seconds)
            return Reply(200, {"slept": seconds})
        if head == "orders" and len(parts) == 2:
            return Reply(200, self.orders.get(parts[1], []))
        if head == "text":
            return Reply(200, "hello")
        return Reply(404, {"error": f"no route {call.method} {call.path}"})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="JSON API test server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8766)
    args = parser.parse_args(argv)
    server = HTTPAPIServer(args.host, args.port).start()
    print(server.url, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
