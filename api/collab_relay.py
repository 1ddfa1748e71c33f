"""Redis pub/sub between API replicas, so a workflow's collaborative room (api/collab.py)
is one room behind a load balancer.

Every update and awareness message a replica accepts from its own clients is published
on the room's channel, after the update is stored; the other replicas apply it to their
copy of the document and pass it to their clients. A replica subscribes to a room's
channel before it loads the room from the database, so an update is either in what it
loads or in what it hears (a repeat of one is harmless: Yjs updates are idempotent).

Pub/sub channels are shared by every database of a Redis server: the channel names carry
the database number (of REDIS_URL, or REDIS_DB with Sentinel), so deployments (and test
runs) on different numbers never hear each other.
"""

from __future__ import annotations

import logging
import uuid
from typing import Callable
from urllib.parse import urlsplit

import anyio
import redis.asyncio as aioredis
from anyio.abc import TaskStatus

from ..redisconn import async_redis_client
from ..settings import RedisConfig

log = logging.getLogger("agentflow.api.collab")

SUBSCRIBE_TIMEOUT = 5.0


def channel_prefix(config: RedisConfig) -> str:
    db = str(config.db) if config.sentinels else urlsplit(config.url or "").path.strip("/")
    return f"agentflow:collab:{db or '0'}:"


class RedisRelay:
    def __init__(self, config: RedisConfig, deliver: Callable[[str, bytes], None]):
        self.config = config
        self.prefix = channel_prefix(config).encode()
        self.deliver = deliver          # (room key, payload) from another replica
        self.node = uuid.uuid4().bytes  # our own messages come back to us: skip them
        self._client: aioredis.Redis | None = None
        self._pubsub = None
        self._subscribed: dict[bytes, anyio.Event] = {}

    def _channel(self, key: str) -> bytes:
        return self.prefix + key.encode()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        self._client = async_redis_client(self.config)  # one URL or Sentinel (agentflow/redisconn.py)
        self._pubsub = self._client.pubsub()
        task_status.started()  # the API starts even when Redis is down; rooms then stay local
        try:
            while True:
                try:
                    if not self._pubsub.subscribed:
                        # a pub/sub connection needs a subscription before it can be read
                        await self._pubsub.subscribe(self.prefix + b"-")
                    message = await self._pubsub.get_message(timeout=1.0)
                except (aioredis.ConnectionError, aioredis.TimeoutError, OSError) as exc:
                    # redis-py subscribes again to every channel when it reconnects
                    log.warning("collaboration relay: Redis unreachable (%s); retrying", exc)
                    await anyio.sleep(1.0)
                    continue
                if message is not None:
                    self._handle(message)
        finally:
            with anyio.CancelScope(shield=True):
                await self._pubsub.aclose()
                await self._client.aclose()

    def _handle(self, message: dict) -> None:
        channel = message.get("channel") or b""
        if message["type"] == "subscribe":
            event = self._subscribed.get(channel)
            if event is not None:
                event.set()
            return
        if message["type"] != "message":
            return
        data: bytes = message["data"]
        if data[:16] == self.node or not channel.startswith(self.prefix):
            return
        try:
            self.deliver(channel[len(self.prefix):].decode(), data[16:])
        except Exception:  # one bad message must not stop the relay for every room
            log.exception("collaboration relay: cannot apply a message for %s", channel)

    async def subscribe(self, key: str) -> None:
        """Returns once Redis has confirmed the subscription."""
        channel = self._channel(key)
        event = self._subscribed.setdefault(channel, anyio.Event())
        try:
            await self._pubsub.subscribe(channel)
        except (aioredis.ConnectionError, aioredis.TimeoutError, OSError) as exc:
            log.warning("collaboration relay: cannot subscribe to %s (%s): the room is local until "
                        "Redis is back", channel, exc)
            return
        with anyio.move_on_after(SUBSCRIBE_TIMEOUT):
            await event.wait()
        if not event.is_set():
            log.warning("collaboration relay: no confirmation of the subscription to %s", channel)

    async def unsubscribe(self, key: str) -> None:
        channel = self._channel(key)
        self._subscribed.pop(channel, None)
        try:
            await self._pubsub.unsubscribe(channel)
        except (aioredis.ConnectionError, aioredis.TimeoutError, OSError):
            pass  # the connection is gone, and its subscriptions with it

    async def publish(self, key: str, payload: bytes) -> None:
        try:
            await self._client.publish(self._channel(key), self.node + payload)
        except (aioredis.ConnectionError, aioredis.TimeoutError, OSError) as exc:
            # stored already: replicas that join later load it; live ones miss it until they reload
            log.warning("collaboration relay: cannot publish to Redis (%s)", exc)
