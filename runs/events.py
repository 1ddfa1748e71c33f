"""Live run events (step started/ended, token deltas, run end) for SSE subscribers.

In-process queues in embedded mode; Redis pub/sub in distributed mode, where the
publisher is a worker process and the subscriber an API process. The API does not
subscribe once per SSE stream: one hub per process (api/run_events.py) listens to the
in-process bus (`MemoryEventBus.listen`) or holds the process's one Redis subscription,
and fans each event out to its streams.
"""

from __future__ import annotations

import json
import queue
import threading
from typing import Any, Callable, Iterator, Protocol

Event = tuple[str, dict[str, Any]]  # (kind, data): kind in step | token | end


class Subscription(Protocol):
    def get(self, timeout: float) -> Event | None: ...

    def close(self) -> None: ...


class EventBus(Protocol):
    def publish(self, run_id: str, kind: str, data: dict[str, Any]) -> None: ...

    def subscribe(self, run_id: str) -> Subscription: ...


class _QueueSubscription:
    def __init__(self, bus: "MemoryEventBus", run_id: str):
        self.bus, self.run_id = bus, run_id
        self.queue: "queue.Queue[Event]" = queue.Queue(maxsize=10_000)

    def get(self, timeout: float) -> Event | None:
        try:
            return self.queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self) -> None:
        self.bus._drop(self)


Listener = Callable[[str, str, Any], None]


class MemoryEventBus:
    def __init__(self) -> None:
        self._subs: dict[str, list[_QueueSubscription]] = {}
        self._listeners: tuple[Listener, ...] = ()
        self._lock = threading.Lock()

    def publish(self, run_id: str, kind: str, data: dict[str, Any]) -> None:
        with self._lock:
            subs = list(self._subs.get(run_id, ()))
        for sub in subs:
            try:
                sub.queue.put_nowait((kind, data))
            except queue.Full:  # a stalled client must not block the run
                pass
        for listener in self._listeners:
            try:
                listener(run_id, kind, data)
            except Exception:  # a live view must not fail the run that publishes
                pass

    def listen(self, listener: Listener) -> None:
        """Call `listener(run_id, kind, data)` on every event, in the publisher's thread
        (it must return at once: the API's hub hands the event to its event loop)."""
        with self._lock:
            self._listeners = (*self._listeners, listener)

    def unlisten(self, listener: Listener) -> None:
        with self._lock:
            self._listeners = tuple(x for x in self._listeners if x is not listener)

    def subscribe(self, run_id: str) -> _QueueSubscription:
        sub = _QueueSubscription(self, run_id)
        with self._lock:
            self._subs.setdefault(run_id, []).append(sub)
        return sub

    def _drop(self, sub: _QueueSubscription) -> None:
        with self._lock:
            subs = self._subs.get(sub.run_id, [])
            if sub in subs:
                subs.remove(sub)
            if not subs:
                self._subs.pop(sub.run_id, None)


class _RedisSubscription:
    def __init__(self, client, run_id: str):
        self.pubsub = client.pubsub(ignore_subscribe_messages=True)
        self.pubsub.subscribe(RedisEventBus.channel(run_id))

    def get(self, timeout: float) -> Event | None:
        msg = self.pubsub.get_message(timeout=timeout)
        if not msg or msg.get("type") != "message":
            return None
        payload = json.loads(msg["data"])
        return payload["kind"], payload["data"]

    def close(self) -> None:
        try:
            self.pubsub.close()
        except Exception:
            pass


class RedisEventBus:
    def __init__(self, url_or_client, config=None):
        """`config` (a RedisConfig or URL; implied by a URL) is where the API's hub opens its
        subscriber connection; None: the settings' Redis."""
        if isinstance(url_or_client, str):
            from ..redisconn import redis_client

            config = url_or_client
            url_or_client = redis_client(url_or_client)
        self.client = url_or_client
        self.config = config

    @staticmethod
    def channel(run_id: str) -> str:
        return f"af:run-events:{run_id}"

    def publish(self, run_id: str, kind: str, data: dict[str, Any]) -> None:
        try:
            self.client.publish(self.channel(run_id), json.dumps({"kind": kind, "data": data}, default=str))
        except Exception:
            # Events are a live view; the store is the record. Losing one must not fail a run.
            pass

    def subscribe(self, run_id: str) -> _RedisSubscription:
        return _RedisSubscription(self.client, run_id)


def iterate(sub: Subscription, timeout: float) -> Iterator[Event]:
    while True:
        event = sub.get(timeout)
        if event is None:
            return
        yield event
