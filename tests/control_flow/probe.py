"""A stand-in API that measures how many calls it serves at once, per key."""

from __future__ import annotations

import threading
import time

from tests.servers import RecordedCall, Reply
from tests.servers.http_api import HTTPAPIServer


class ConcurrencyServer(HTTPAPIServer):
    """`/hold/<key>?s=S`: holds the call S seconds; `peak[key]` is the most calls of that key
    it held at once, `peak_all` of all keys, `served[key]` how many it answered."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self._count_lock = threading.Lock()
        self.now: dict[str, int] = {}
        self.peak: dict[str, int] = {}
        self.served: dict[str, int] = {}
        self.now_all = self.peak_all = 0

    def handle(self, call: RecordedCall) -> Reply:
        parts = call.path.strip("/").split("/")
        if parts[0] != "hold" or len(parts) != 2:
            return super().handle(call)
        key = parts[1]
        with self._count_lock:
            self.now[key] = self.now.get(key, 0) + 1
            self.peak[key] = max(self.peak.get(key, 0), self.now[key])
            self.now_all += 1
            self.peak_all = max(self.peak_all, self.now_all)
        try:
            time.sleep(float(call.query.get("s", 0.5)))
        finally:
            with self._count_lock:
                self.now[key] -= 1
                self.now_all -= 1
                self.served[key] = self.served.get(key, 0) + 1
        return Reply(200, {"held": key})


def capped_workflow(workflow_id: str, base_url: str, max_concurrency: int, keyed: bool = False,
                    hold_s: float = 0.5) -> dict:
    """input -> call (api, queue q with max_concurrency; per metadata.customer when keyed)."""
    queue = {"id": "q", "max_concurrency": max_concurrency}
    if keyed:
        queue["concurrency_key"] = "{metadata.customer}"
    return {"id": workflow_id, "name": "capped", "start_node": "in",
            "nodes": [{"id": "in", "type": "input"},
                      {"id": "call", "type": "api", "source": "svc", "queue": "q",
                       "config": {"path": f"/hold/{{metadata.customer}}?s={hold_s}", "max_retries": 0,
                                  "timeout_seconds": 60}}],
            "edges": [{"from": "in", "to": "call"}],
            "queues": [queue],
            "sources": [{"id": "svc", "kind": "api", "base_url": base_url, "allow_private": True}]}
