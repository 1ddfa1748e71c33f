"""A Python y-websocket client for the tests: pycrdt's `Provider` over a `websockets`
connection to `/workflows/{id}/collab`, with the token in the subprotocol as Studio sends it."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import AsyncIterator

import anyio
from pycrdt import Doc, Provider
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed


class WebsocketsChannel:
    """pycrdt's Channel protocol over a websockets client connection."""

    def __init__(self, ws: ClientConnection, path: str):
        self.ws = ws
        self._path = path

    @property
    def path(self) -> str:
        return self._path

    def __aiter__(self):
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self.recv()
        except ConnectionClosed:
            raise StopAsyncIteration from None

    async def send(self, message: bytes) -> None:
        try:
            await self.ws.send(message)
        except ConnectionClosed:
            pass

    async def recv(self) -> bytes:
        data = await self.ws.recv()
        return data if isinstance(data, bytes) else data.encode()


def socket_url(base_url: str, workflow_id: str) -> str:
    return base_url.replace("http://", "ws://", 1) + f"/workflows/{workflow_id}/collab"


@asynccontextmanager
async def raw_socket(base_url: str, workflow_id: str, token: str | None) -> AsyncIterator[ClientConnection]:
    protocols = ["agentflow"] + ([f"bearer.{token}"] if token else [])
    async with connect(socket_url(base_url, workflow_id), subprotocols=protocols,  # type: ignore[arg-type]
                       max_size=None, open_timeout=10) as ws:
        yield ws


@asynccontextmanager
async def shared_doc(base_url: str, workflow_id: str, token: str | None,
                     timeout: float = 10) -> AsyncIterator[tuple[Doc, ClientConnection]]:
    """A document kept in sync with the server's room, synced before it is handed out."""
    doc = Doc()
    async with raw_socket(base_url, workflow_id, token) as ws:
        async with Provider(doc, WebsocketsChannel(ws, workflow_id)) as provider:
            with anyio.fail_after(timeout):
                await provider.synced.wait()
            yield doc, ws


async def closed_with(ws: ClientConnection, timeout: float = 10) -> tuple[int | None, str]:
    """Read until the server closes the socket; its close code and reason."""
    with anyio.fail_after(timeout):
        try:
            while True:
                await ws.recv()
        except ConnectionClosed as closed:
            frame = closed.rcvd
            return (frame.code, frame.reason) if frame else (None, "")


async def close_of(ws: ClientConnection, timeout: float = 10) -> tuple[int | None, str]:
    """Wait for the server to close a socket that someone else reads (a Provider's)."""
    with anyio.fail_after(timeout):
        await ws.wait_closed()
    return ws.close_code, ws.close_reason or ""


async def eventually(check, timeout: float = 5, interval: float = 0.05):
    """`check()` once it returns a true value; its last failure when it never does."""
    deadline = anyio.current_time() + timeout
    while True:
        try:
            result = check()
            if result:
                return result
            error: Exception | None = AssertionError(f"{check} stayed false")
        except AssertionError as exc:
            error = exc
        if anyio.current_time() > deadline:
            raise error
        await anyio.sleep(interval)
