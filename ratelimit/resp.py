"""RESP for the limiter: command packing, and one multiplexed asyncio connection to Redis
for the API's per-request limit checks.

Why not `redis.asyncio`: it costs 3.6x the CPU. Measured by bench/redis_clients.py (2 cores,
Python 3.11, redis-py 8.2 with hiredis 3.5), one API request's check (the caller's address
and tenant: two EVALSHAs) costs 116 us of CPU through a redis.asyncio pipeline against
32 us here (3.6x), 93 against 20 us with 32 concurrent callers (4.7x); redis.asyncio's pool
carrying this module's pre-packed command still costs 2.1x to 2.6x. Here every caller on
the event loop shares one connection: commands are written whole and Redis answers in
order, so replies go to waiting callers first in, first out, parsed by hiredis (its
`Reader`: the `hiredis` pin in pyproject.toml). Only plain TCP (host, port, db, user,
password); for anything else `RedisLimiter` runs its sync client on a thread.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

import hiredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError



def bulk(items) -> bytes:
    """RESP bulk strings, concatenated (a command is `*<n>\\r\\n` and n of them)."""
    return b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in items)


def _command(*args: str | bytes) -> bytes:
    parts = [a.encode() if isinstance(a, str) else a for a in args]
    return b"*%d\r\n" % len(parts) + bulk(parts)


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.reader = hiredis.Reader()
        self.waiting: deque[asyncio.Future] = deque()
        self.transport: asyncio.Transport | None = None
        self.lost: Exception | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while (reply := self.reader.gets()) is not False:
            if self.waiting:
                waiter = self.waiting.popleft()
                if not waiter.done():
                    waiter.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = exc or RedisConnectionError("Redis closed the connection")
        while self.waiting:
            waiter = self.waiting.popleft()
            if not waiter.done():
                waiter.set_exception(RedisConnectionError(str(self.lost)))


class MultiplexedConnection:
    """`await conn.execute([packed, ...])` -> the replies, in order. Error replies come back
    as `hiredis.ReplyError` values (the caller decides); a lost or silent connection raises
    redis' ConnectionError or TimeoutError, and the next call connects again."""

    def __init__(self, host: str = "localhost", port: int = 6379, db: int = 0, username: str | None = None,
                 password: str | None = None, timeout: float = 2.0):
        self.host, self.port, self.db = host, port, int(db or 0)
        self.username, self.password = username, password
        self.timeout = timeout
        self._proto: _Protocol | None = None
        self._connecting: asyncio.Future | None = None

    @classmethod
    def from_kwargs(cls, kw: dict[str, Any]) -> "MultiplexedConnection":
        return cls(kw.get("host", "localhost"), kw.get("port", 6379), kw.get("db", 0), kw.get("username"),
                   kw.get("password"), kw.get("socket_timeout") or 2.0)

    async def _connect(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.timeout):
                _, proto = await loop.create_connection(_Protocol, self.host, self.port)
                setup = []
                if self.password:
                    setup.append(_command("AUTH", *([self.username] if self.username else []), self.password))
                if self.db:
                    setup.append(_command("SELECT", str(self.db)))
                if setup:
                    for reply in await self._send(proto, setup):
                        if isinstance(reply, hiredis.ReplyError):
                            proto.transport.close()
                            raise ResponseError(str(reply))
        except (OSError, TimeoutError) as exc:
            raise RedisConnectionError(f"cannot connect to Redis at {self.host}:{self.port}: {exc}") from exc
        return proto

    async def _protocol(self) -> _Protocol:
        proto = self._proto
        if proto is not None and proto.lost is None and not proto.transport.is_closing():
            return proto
        if self._connecting is None:  # one connect for every caller waiting on it
            self._connecting = asyncio.ensure_future(self._connect())
        connecting = self._connecting
        try:
            self._proto = await asyncio.shield(connecting)
        finally:
            if self._connecting is connecting and connecting.done():
                self._connecting = None
        return self._proto

    @staticmethod
    async def _send(proto: _Protocol, packed: list[bytes]) -> list[Any]:
        loop = asyncio.get_running_loop()
        waiters = [loop.create_future() for _ in packed]
        proto.waiting.extend(waiters)
        proto.transport.write(b"".join(packed))
        try:
            return [await w for w in waiters]
        except BaseException:
            for w in waiters:  # the connection failed them all: one error is enough
                if w.done() and not w.cancelled():
                    w.exception()
                else:
                    w.cancel()
            raise

    async def execute(self, packed: list[bytes]) -> list[Any]:
        proto = await self._protocol()
        try:
            async with asyncio.timeout(self.timeout):
                return await self._send(proto, packed)
        except TimeoutError:
            # the replies may still come: this connection can no longer pair them with callers
            proto.lost = RedisTimeoutError("timed out")
            proto.transport.close()
            raise RedisTimeoutError(f"Redis at {self.host}:{self.port} did not answer in {self.timeout:g} s") from None

    def close(self) -> None:
        if self._proto is not None and self._proto.transport is not None:
            self._proto.transport.close()
