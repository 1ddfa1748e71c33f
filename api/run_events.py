"""One live-event hub per API process, feeding every SSE stream of runs (GET /runs/{id}/events).

Streams do not subscribe on their own. The hub keeps a registry run id -> the streams that
watch it (each a bounded asyncio queue) and fills it from one source per process:

- embedded mode: the in-process `MemoryEventBus` calls the hub from the publishing thread,
  and the hub hands the event to its event loop;
- distributed mode: ONE Redis pub/sub connection (redis.asyncio; one URL or Sentinel via
  agentflow/redisconn.py), subscribed to a run's channel while the run has watchers.

Each event is decoded and encoded (JSON, redaction, the SSE frame) once per process, not
once per watcher. A stream's queue is bounded: a client too slow to keep up loses what was
queued for it and reads the run's stored steps instead (a `RESYNC` marker), and never holds
up the others. The same marker follows a Redis reconnection, when events may have been
missed. A run is checked in the store once a second for everyone watching it, for an end
or a pause whose event never came (published while Redis was away, or on another replica).

Order that loses nothing: a stream registers (and, with Redis, waits for the subscription
to be confirmed) before it reads the stored run; what both hold is sent once (the stream's
step dedup).
"""

from __future__ import annotations

import asyncio
import json
import logging
from functools import partial
from typing import Any

import anyio
from sse_starlette import ServerSentEvent

from ..graph.secrets import redact
from ..runs.events import RedisEventBus
from ..store.runs import TERMINAL
from .errors import scrub

log = logging.getLogger("agentflow.api.events")

SSE_SEP = "\r\n"            # sse-starlette's default line separator, passed to the response too
QUEUE_SIZE = 1000           # events waiting for one stream; past that it catches up from the store
STATUS_CHECK_SECONDS = 1.0  # how often the watched runs' stored status is read (one query)
SUBSCRIBE_TIMEOUT = 5.0     # wait for Redis to confirm a run's subscription, then go on without
CLIENT_NAME = "agentflow-run-events"  # CLIENT LIST shows the one subscriber of each API process
_PREFIX = RedisEventBus.channel("").encode()
_IDLE_CHANNEL = _PREFIX + b"-"  # a pub/sub connection needs one subscription before it is read
RESYNC = "_resync"


def frame(kind: str, data: Any) -> bytes:
    """One SSE event as sent (redacted: live token deltas are not stored, so not redacted
    on the way to the store)."""
    text = json.dumps(redact(data), default=str, ensure_ascii=False)
    return ServerSentEvent(data=text, event=kind, sep=SSE_SEP).encode()


class Live:
    """An event as every stream of the run gets it; its frames are made once, when the
    first stream sends it."""

    __slots__ = ("kind", "data", "synthetic", "_frame", "_steps")

    def __init__(self, kind: str, data: Any, synthetic: bool = False):
        self.kind, self.data, self.synthetic = kind, data, synthetic
        self._frame: bytes | None = None
        self._steps: list[tuple[dict, bytes]] | None = None

    def frame(self) -> bytes:
        if self._frame is None:
            self._frame = frame(self.kind, self.data)
        return self._frame

    def step_frames(self) -> list[tuple[dict, bytes]]:
        """(step, frame) of the steps an `end` carries."""
        if self._steps is None:
            steps = self.data.get("steps") if isinstance(self.data, dict) else None
            self._steps = [(s, frame("step", s)) for s in steps or []]
        return self._steps


_RESYNC = Live(RESYNC, None, synthetic=True)


class Watch:
    """One stream's view of a run: `await get()` the next event."""

    __slots__ = ("hub", "run_id", "queue", "resyncs")

    def __init__(self, hub: "RunEventHub", run_id: str):
        self.hub, self.run_id = hub, run_id
        self.queue: asyncio.Queue[Live] = asyncio.Queue(QUEUE_SIZE)
        self.resyncs = 0

    def put(self, live: Live) -> None:
        try:
            self.queue.put_nowait(live)
        except asyncio.QueueFull:  # a slow client: drop its backlog, it re-reads the store
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait(_RESYNC)
            self.resyncs += 1

    async def get(self) -> Live:
        return await self.queue.get()

    def close(self) -> None:
        self.hub._unwatch(self)


class _Run:
    __slots__ = ("watches", "ready", "ended", "told_waiting", "resync_when_ready")

    def __init__(self) -> None:
        self.watches: set[Watch] = set()
        self.ready = asyncio.Event()   # Redis confirmed the subscription (embedded: at once)
        self.ended = False             # an `end` went out: no more status checks
        self.told_waiting = False      # a `waiting` went out since the last step
        self.resync_when_ready = False


class RunEventHub:
    """Create it inside the event loop that serves the streams (the app's lifespan)."""

    def __init__(self, services):
        self.loop = asyncio.get_running_loop()
        self.store = services.runs
        self.bus = services.dispatcher.bus
        # the bus decides: in-process (it can be listened to) or Redis pub/sub
        self.redis_config = None if hasattr(self.bus, "listen") else (
            getattr(self.bus, "config", None) or services.settings.redis)
        self._runs: dict[str, _Run] = {}
        self._tasks: dict[str, asyncio.Task | None] = {"status": None, "redis": None}
        self._closed = False
        # distributed: the one subscriber connection and what Redis still has to confirm
        self._pubsub = None
        self._commands: asyncio.Queue[tuple[str, bytes]] | None = None
        self._pending: dict[bytes, int] = {}
        self.reconnects = 0
        if self.redis_config is None:
            if not hasattr(self.bus, "listen"):
                raise RuntimeError(f"the event bus {type(self.bus).__name__} is neither in-process nor on a "
                                   "configured Redis")
            self.bus.listen(self._from_thread)

    # ------------------------------------------------------------ streams come and go

    @property
    def watchers(self) -> int:
        return sum(len(r.watches) for r in self._runs.values())

    async def watch(self, run_id: str) -> Watch:
        """Register a stream of `run_id`; returns once its events are being received."""
        entry = self._runs.get(run_id)
        if entry is None:
            entry = self._runs[run_id] = _Run()
            if self.redis_config is None:
                entry.ready.set()
            else:
                self._subscribe(run_id)
        watch = Watch(self, run_id)
        entry.watches.add(watch)
        entry.ended = False  # a stream of an ended run reads the end from the store
        self._start_tasks()
        if not entry.ready.is_set():
            try:
                await asyncio.wait_for(entry.ready.wait(), SUBSCRIBE_TIMEOUT)
            except asyncio.TimeoutError:
                # Redis is away: the stream starts on the store alone (status checks), and
                # catches up from the store once the subscription is confirmed
                entry.resync_when_ready = True
                log.warning("run events: no Redis subscription for run %s yet; following the store", run_id)
            except BaseException:
                watch.close()
                raise
        return watch

    def _unwatch(self, watch: Watch) -> None:
        entry = self._runs.get(watch.run_id)
        if entry is None:
            return
        entry.watches.discard(watch)
        if entry.watches:
            return
        del self._runs[watch.run_id]
        if self.redis_config is not None and self._commands is not None:
            self._commands.put_nowait(("unsubscribe", _PREFIX + watch.run_id.encode()))

    # ------------------------------------------------------------ events in

    def _from_thread(self, run_id: str, kind: str, data: Any) -> None:
        """MemoryEventBus listener, in the publishing thread."""
        if run_id not in self._runs or self._closed:
            return
        try:
            self.loop.call_soon_threadsafe(self._dispatch, run_id, kind, data)
        except RuntimeError:  # the loop is closed (a test client's): stop listening
            self.bus.unlisten(self._from_thread)

    def _dispatch(self, run_id: str, kind: str, data: Any, synthetic: bool = False) -> None:
        entry = self._runs.get(run_id)
        if entry is None:
            return
        if kind == "end":
            entry.ended = True
        elif kind == "waiting":
            entry.told_waiting = True
        elif kind == "step":
            entry.told_waiting = False
        live = Live(kind, data, synthetic)
        for watch in entry.watches:
            watch.put(live)

    def _resync(self, entry: _Run) -> None:
        for watch in entry.watches:
            watch.put(_RESYNC)

    # ------------------------------------------------------------ background tasks

    def _start_tasks(self) -> None:
        if self._closed:
            return
        task = self._tasks["status"]
        if task is None or task.done():
            self._tasks["status"] = self.loop.create_task(self._status_loop())
        task = self._tasks["redis"]
        if self.redis_config is not None and (task is None or task.done()):
            self._tasks["redis"] = self.loop.create_task(self._redis_loop())

    async def _status_loop(self) -> None:
        """An end or pause whose event never came (Redis away, another replica, a run
        cancelled while queued): one query for every watched run, not one per stream."""
        while self._runs:
            await asyncio.sleep(STATUS_CHECK_SECONDS)
            ids = [run_id for run_id, entry in self._runs.items() if not entry.ended]
            if not ids:
                continue
            try:
                statuses = await anyio.to_thread.run_sync(self.store.statuses, ids)
                for run_id in ids:
                    entry = self._runs.get(run_id)
                    if entry is None or entry.ended:
                        continue
                    status = statuses.get(run_id)
                    if status == "waiting" and not entry.told_waiting:
                        current = await anyio.to_thread.run_sync(
                            partial(self.store.get, run_id, with_steps=False)) or {}
                        self._dispatch(run_id, "waiting", {"run_id": run_id, "status": "waiting",
                                                           "waiting_for": current.get("waiting_for")}, True)
                    elif status is None or status in TERMINAL:
                        final = await anyio.to_thread.run_sync(self.store.get, run_id)
                        self._dispatch(run_id, "end", final, True)
            except Exception as exc:  # the database is away: the streams wait, the next check retries
                log.warning("run events: status check failed: %s: %s", type(exc).__name__, scrub(str(exc))[:200])

    def _subscribe(self, run_id: str) -> None:
        channel = _PREFIX + run_id.encode()
        self._pending[channel] = self._pending.get(channel, 0) + 1
        if self._commands is not None:
            self._commands.put_nowait(("subscribe", channel))
        # else: not connected; the connection subscribes to every watched run when it opens

    async def _redis_loop(self) -> None:
        from redis.exceptions import RedisError

        from ..redisconn import async_redis_client

        delay = 0.5
        client = None
        connected_before = False
        while not self._closed:
            pubsub = sender = None
            try:
                if client is None:
                    client = async_redis_client(self.redis_config, client_name=CLIENT_NAME,
                                                health_check_interval=15)
                pubsub = client.pubsub()
                # everything watched now, in one SUBSCRIBE; what arrived meanwhile was lost
                channels = [_PREFIX + run_id.encode() for run_id in self._runs]
                self._pending = {channel: 1 for channel in channels}
                for entry in self._runs.values():
                    if connected_before and entry.ready.is_set():
                        entry.resync_when_ready = True
                    entry.ready.clear()
                # runs watched from here on are queued, and subscribed after this SUBSCRIBE
                self._pubsub, self._commands = pubsub, asyncio.Queue()
                await pubsub.subscribe(_IDLE_CHANNEL, *channels)
                sender = self.loop.create_task(self._send(pubsub, self._commands))
                if connected_before:
                    log.warning("run events: Redis subscription restored (%d runs watched)", len(channels))
                connected_before, delay = True, 0.5
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None:
                        self._handle(message)
                    if sender.done():  # a SUBSCRIBE failed: the connection is suspect
                        sender.result()
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError, asyncio.TimeoutError) as exc:
                log.warning("run events: Redis unreachable (%s); reconnecting in %.1f s", exc, delay)
            except Exception:  # never let one bad message end the process's subscription
                log.exception("run events: subscriber failed; reconnecting")
            finally:
                self._pubsub = self._commands = None
                if sender is not None:
                    sender.cancel()
                if pubsub is not None:
                    try:
                        await asyncio.shield(pubsub.aclose())
                    except Exception:
                        pass
                if self._closed and client is not None:
                    try:
                        await asyncio.shield(client.aclose())
                    except Exception:
                        pass
            self.reconnects += 1
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _send(self, pubsub, commands: asyncio.Queue) -> None:
        """SUBSCRIBE / UNSUBSCRIBE in the order streams came and went."""
        while True:
            verb, channel = await commands.get()
            if verb == "subscribe":
                await pubsub.subscribe(channel)
            else:
                await pubsub.unsubscribe(channel)

    def _handle(self, message: dict) -> None:
        channel: bytes = message.get("channel") or b""
        kind = message.get("type")
        if kind == "message" and channel.startswith(_PREFIX):
            try:
                payload = json.loads(message["data"])
                self._dispatch(channel[len(_PREFIX):].decode(), payload["kind"], payload["data"])
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("run events: unreadable message on %s: %s", channel, exc)
        elif kind == "subscribe" and channel != _IDLE_CHANNEL:
            pending = self._pending.get(channel, 0)
            if pending > 1:
                self._pending[channel] = pending - 1
                return  # a later SUBSCRIBE of the same channel is still to be confirmed
            self._pending.pop(channel, None)
            entry = self._runs.get(channel[len(_PREFIX):].decode())
            if entry is None:
                return
            if pending == 0 and entry.ready.is_set():
                entry.resync_when_ready = True  # redis-py reconnected and subscribed again by itself
            entry.ready.set()
            if entry.resync_when_ready:
                entry.resync_when_ready = False
                self._resync(entry)

    # ------------------------------------------------------------ shutdown

    async def aclose(self) -> None:
        self._closed = True
        unlisten = getattr(self.bus, "unlisten", None)
        if self.redis_config is None and unlisten is not None:
            unlisten(self._from_thread)
        tasks = [t for t in self._tasks.values() if t is not None and not t.done()]
        for task in tasks:
            task.cancel()
        for task in tasks:
            try:
                await task
            except BaseException:
                pass


def hub_of(app, services) -> RunEventHub:
    """The app's hub for the running loop (made by the lifespan; a test client that never
    ran the lifespan gets one per loop)."""
    hub: RunEventHub | None = getattr(app.state, "run_events", None)
    if hub is None or hub.loop is not asyncio.get_running_loop():
        if hub is not None and hub.redis_config is None:
            hub.bus.unlisten(hub._from_thread)
        hub = app.state.run_events = RunEventHub(services)
    return hub
