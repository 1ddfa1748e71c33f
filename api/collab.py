"""Collaborative editing: the y-websocket endpoint `/workflows/{workflow_id}/collab`
(contract section 9).

Each workflow of a tenant has one shared Yjs document (layout: collab_doc.py), served to
its editors as a room of pycrdt-websocket (`YRoom`: the sync protocol, broadcasting,
awareness). This module adds what the API needs around it:

- the same authentication and tenancy as the REST API, when the socket opens: a token in
  the `Sec-WebSocket-Protocol` header (`agentflow, bearer.<jwt>`: a browser cannot set
  Authorization on a WebSocket) or in `Authorization`, or the local admin in local mode.
  The room is named by the token's tenant, so another tenant's workflow is not found.
  Roles come from `roles.SOCKETS`: a viewer watches, only an editor's updates are applied;
- a check of every message before the room sees it (`Guard`): a malformed message, an
  oversized one, or one that would take the document past AGENTFLOW_COLLAB_MAX_DOC_BYTES
  closes that client's socket with a close code and reason, and reaches nobody else;
- persistence: every accepted update is stored (store/collab.py) before it is relayed, a
  new room loads the stored updates, or seeds itself from the workflow's current version;
- distributed mode: rooms of several replicas are one room through Redis (collab_relay.py).

Close codes: 4400 malformed message, 4401 not authenticated, 4403 role too low, 4404 no
such workflow for this tenant, 1009 too big, 1003 a text frame, 1013 over the request limits
(api/abuse.py: opening a socket counts as a request) or the identity provider unreachable.
"""

from __future__ import annotations

import json
import logging
import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import anyio
from anyio.abc import TaskGroup
from pycrdt import (Decoder, Doc, YMessageType, YSyncMessageType, create_awareness_message, merge_updates,
                    read_message)
from pycrdt.websocket import YRoom
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from . import roles
from .auth import Principal, auth_config, authenticate, client_host
from .collab_doc import is_empty, seed_update
from .errors import ApiError

log = logging.getLogger("agentflow.api.collab")

PATH = "/workflows/{workflow_id}/collab"
SUBPROTOCOL = "agentflow"
TOKEN_PROTOCOL = "bearer."
EMPTY_UPDATE = b"\x00\x00"
QUERY_AWARENESS = 3  # y-protocols' messageQueryAwareness
COMPACT_ROWS = 200  # stored updates of a room above which its rows are merged when it empties

CLOSE_MALFORMED, CLOSE_UNAUTHENTICATED, CLOSE_FORBIDDEN, CLOSE_NOT_FOUND = 4400, 4401, 4403, 4404
CLOSE_TOO_BIG, CLOSE_UNSUPPORTED, CLOSE_TRY_LATER = 1009, 1003, 1013


class Refused(Exception):
    """Close the client's socket with `code` and `reason` (at most 123 bytes on the wire)."""

    def __init__(self, code: int, reason: str):
        super().__init__(reason)
        self.code = code
        self.reason = reason.encode()[:123].decode(errors="ignore")


# ---------------------------------------------------------------- who is connecting


def socket_token(websocket: WebSocket) -> str | None:
    for protocol in websocket.scope.get("subprotocols") or ():
        if protocol.startswith(TOKEN_PROTOCOL) and len(protocol) > len(TOKEN_PROTOCOL):
            return protocol[len(TOKEN_PROTOCOL):]
    return None


def _authenticate(websocket: WebSocket) -> Principal:
    cfg = auth_config(websocket)  # type: ignore[arg-type]  (reads app.state only)
    token = socket_token(websocket)
    if token is None or cfg.mode == "off":
        return authenticate(websocket, cfg)  # type: ignore[arg-type]  (Authorization, local, off)
    return cfg.verify(token)


async def _count_against_limits(websocket: WebSocket, principal: Principal) -> None:
    """Opening a socket counts as one request against the address's and the tenant's
    limits (api/abuse.py), as any REST call does."""
    limits = getattr(websocket.app.state, "api_limits", None)
    if limits is None or limits.exempt(websocket.scope, auth_config(websocket).mode):
        return
    try:
        await limits.check_async((client_host(websocket.scope),), principal.tenant)
    except ApiError as exc:  # RateLimited
        raise Refused(CLOSE_TRY_LATER, str(exc.detail)) from None


async def principal_of(websocket: WebSocket) -> Principal:
    try:
        if auth_config(websocket).jwks_url:  # checking the token may fetch the provider's keys
            principal = await anyio.to_thread.run_sync(_authenticate, websocket)
        else:
            principal = _authenticate(websocket)
    except ApiError as exc:
        code = CLOSE_UNAUTHENTICATED if exc.status_code == 401 else CLOSE_TRY_LATER
        raise Refused(code, str(exc.detail)) from None
    await _count_against_limits(websocket, principal)
    watch, _ = roles.SOCKETS[PATH]
    if principal.via == "public" or not principal.allows(watch):
        raise Refused(CLOSE_FORBIDDEN, f"forbidden: role {principal.role!r} cannot open this document "
                                       f"(needs {watch})")
    return principal


# ---------------------------------------------------------------- checking messages


def awareness_clients(payload: bytes) -> dict[int, bool]:
    """The clients of an awareness update (a count, then per client its id, clock and
    JSON state), each with whether it still has a state; ValueError when malformed."""
    decoder = Decoder(payload)
    clients: dict[int, bool] = {}
    for _ in range(decoder.read_var_uint()):
        client = decoder.read_var_uint()
        decoder.read_var_uint()
        state = decoder.read_var_string()
        clients[client] = json.loads(state) is not None if state else False
    if decoder.i0 != len(payload):
        raise ValueError("trailing bytes")
    return clients


@dataclass
class Verdict:
    message: bytes | None        # what the room's loop handles (None: nothing left to do)
    update: bytes | None = None  # a document update to store and relay
    awareness: bool = False      # an awareness message to relay


class Guard:
    """One client's messages checked before its room handles them (its updates applied here)."""

    def __init__(self, room: "WorkflowRoom", principal: Principal, max_message: int, max_doc: int):
        self.room = room
        self.principal = principal
        self.may_edit = principal.allows(roles.SOCKETS[PATH][1])
        self.presence: set[int] = set()
        self.max_message = max_message
        self.max_doc = max_doc

    def check(self, message: bytes) -> Verdict:
        if len(message) > self.max_message:
            raise Refused(CLOSE_TOO_BIG, f"message of {len(message)} bytes: the limit is {self.max_message}")
        if not message:
            raise Refused(CLOSE_MALFORMED, "malformed message: empty")
        kind = message[0]
        try:
            if kind == YMessageType.SYNC:
                return self._sync(message)
            if kind == YMessageType.AWARENESS:
                for client, present in awareness_clients(read_message(message[1:])).items():
                    # whose presence this socket speaks for: removed when it goes
                    (self.presence.add if present else self.presence.discard)(client)
                return Verdict(message, awareness=True)
        except Refused:
            raise
        except Exception as exc:  # any decoding error: the bytes are not what they claim
            raise Refused(CLOSE_MALFORMED, f"malformed {YMessageType(kind).name.lower()} message: "
                                           f"{type(exc).__name__}") from None
        if kind == QUERY_AWARENESS:  # the room answers with awareness on its own
            return Verdict(None)
        raise Refused(CLOSE_MALFORMED, f"malformed message: unknown type {kind}")

    def _sync(self, message: bytes) -> Verdict:
        step = message[1]
        payload = read_message(message[2:])
        if step == YSyncMessageType.SYNC_STEP1:
            self.room.ydoc.get_update(payload)  # the reply's own decoding: raises on a bad state vector
            return Verdict(message)
        if step not in (YSyncMessageType.SYNC_STEP2, YSyncMessageType.SYNC_UPDATE):
            raise ValueError(f"unknown sync step {step}")
        if payload == EMPTY_UPDATE:
            return Verdict(message)
        merge_updates(payload, EMPTY_UPDATE)  # decodes the whole update: raises when malformed
        if not self.may_edit:
            # A viewer's client answers the server's state with what it has; nothing it
            # sends is applied.
            log.debug("dropped an update of viewer %s in %s", self.principal.subject, self.room.key)
            return Verdict(None)
        if self.room.size + len(payload) > self.max_doc and self.room.size_after(payload) > self.max_doc:
            raise Refused(CLOSE_TOO_BIG, f"the document would exceed {self.max_doc} bytes "
                                         "(AGENTFLOW_COLLAB_MAX_DOC_BYTES)")
        # Applied here rather than by the room's loop, to learn what it changed: a client
        # that sends back what it was sent (pycrdt's Provider does) changes nothing, and
        # is neither stored nor named among the editors.
        change = self.room.apply(payload)
        return Verdict(None, update=change if change != EMPTY_UPDATE else None)


# ---------------------------------------------------------------- the client's socket


class SocketChannel:
    """A pycrdt `Channel` over a Starlette WebSocket whose incoming messages pass the Guard
    first; a refused one closes this socket only."""

    def __init__(self, websocket: WebSocket, room: "WorkflowRoom", guard: Guard):
        self.websocket = websocket
        self.room = room
        self.guard = guard
        self.closed = False
        self._send_lock = anyio.Lock()

    @property
    def path(self) -> str:
        return self.room.key

    def __aiter__(self) -> "SocketChannel":
        return self

    async def __anext__(self) -> bytes:
        while True:
            try:
                message = await self.recv()
                verdict = self.guard.check(message)
            except Refused as refused:
                log.info("closed a collaboration socket of %s on %s: %s", self.guard.principal.subject,
                         self.room.key, refused.reason)
                await self.close(refused.code, refused.reason)
                raise StopAsyncIteration from None
            except (WebSocketDisconnect, RuntimeError):
                self.closed = True
                raise StopAsyncIteration from None
            if verdict.update is not None:
                self.room.record(verdict.update, self.guard.principal.subject)
            elif verdict.awareness:
                self.room.relay(b"a" + message)
            if verdict.message is not None:
                return verdict.message

    async def recv(self) -> bytes:
        message = await self.websocket.receive()
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(message.get("code", 1000))
        data = message.get("bytes")
        if data is None:
            raise Refused(CLOSE_UNSUPPORTED, "y-websocket messages are binary")
        return data

    async def send(self, message: bytes) -> None:
        if self.closed:
            return
        async with self._send_lock:
            try:
                await self.websocket.send_bytes(message)
            except Exception:  # gone: the room drops it when its loop ends
                self.closed = True

    async def close(self, code: int, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        async with self._send_lock:
            try:
                await self.websocket.close(code, reason)
            except Exception:
                pass


# ---------------------------------------------------------------- rooms


class WorkflowRoom(YRoom):
    """One workflow's document in this process, with the clients connected here."""

    def __init__(self, hub: "CollabHub", tenant: str, workflow_id: str, doc: Doc):
        super().__init__(ready=True, ydoc=doc, log=log, exception_handler=_log_exception)
        self.hub = hub
        self.tenant = tenant
        self.workflow_id = workflow_id
        self.key = f"{tenant}/{workflow_id}"
        self.users = 0
        self.size = len(doc.get_update())
        self.on_message_error = self._message_error
        self._change = EMPTY_UPDATE
        self._watch = doc.observe(self._changed)
        self._outbox_in, self._outbox_out = anyio.create_memory_object_stream[tuple[bytes, str]](math.inf)

    def apply(self, update: bytes) -> bytes:
        """Apply a client's update; the update of what it changed (the room's observer
        sends that to every client here)."""
        self._change = EMPTY_UPDATE
        self.ydoc.apply_update(update)
        self.size += len(self._change)
        return self._change

    def _changed(self, event) -> None:
        self._change = event.update

    async def serve(self, channel: "SocketChannel") -> None:  # type: ignore[override]
        # YRoom tells a newcomer nobody's presence until each client renews it (15 s):
        # send what the room knows at once, and take back a client's presence when it goes
        known = [c for c in self.awareness.states if c != self.awareness.client_id]
        if known:
            await channel.send(create_awareness_message(self.awareness.encode_awareness_update(known)))
        try:
            await super().serve(channel)
        finally:
            self.forget(sorted(channel.guard.presence))

    def forget(self, clients: list[int]) -> None:
        clients = [c for c in clients if c in self.awareness.states]
        if not clients:
            return
        self.awareness.remove_awareness_states(clients, "gone")
        message = create_awareness_message(self.awareness.encode_awareness_update(clients))
        for client in list(self.clients):
            self.hub.spawn(client.send, message)
        self.relay(b"a" + message)

    def size_after(self, update: bytes) -> int:
        """The document's real size with `update` applied (tried on a copy). `size` only
        adds up what updates changed, an upper bound; near the limit it is not enough: a
        client that sends back what it was sent adds nothing."""
        copy = Doc()
        current = self.ydoc.get_update()
        self.size = len(current)
        copy.apply_update(current)
        copy.apply_update(update)
        return len(copy.get_update())

    def record(self, update: bytes, subject: str) -> None:
        """Store a client's update, then tell the other replicas: in order, one at a time,
        so the other replicas get this room's updates in the order it applied them."""
        self.hub.writing[self.key] += 1
        self._outbox_in.send_nowait((update, subject))

    async def drain(self) -> None:
        """Store and relay what `record` queued, until the room closes and all is done."""
        writing = self.hub.writing
        async with self._outbox_out:
            async for update, subject in self._outbox_out:
                try:
                    await anyio.to_thread.run_sync(self.hub.store.append, self.tenant, self.workflow_id,
                                                   update, subject)
                except Exception:
                    log.exception("cannot store an update of %s: kept in memory until the room closes", self.key)
                    self.hub.unsaved[self.key].append((update, subject))
                finally:
                    writing[self.key] -= 1
                await self.hub.publish(self.key, b"u" + update)

    def close_outbox(self) -> None:
        self._outbox_in.close()

    def relay(self, payload: bytes) -> None:
        self.hub.spawn(self.hub.publish, self.key, payload)

    def remote(self, payload: bytes) -> None:
        """A message another replica accepted: an update (`u`) or awareness (`a`)."""
        kind, body = payload[:1], payload[1:]
        if kind == b"u":
            self.ydoc.apply_update(body)  # the room's observer passes it to our clients
            self.size += len(body)
        elif kind == b"a":
            for client in list(self.clients):
                self.hub.spawn(client.send, body)
            self.awareness.apply_awareness_update(read_message(body[1:]), "relay")

    async def _message_error(self, exc: Exception, message: bytes, channel: Any) -> bool:
        # The Guard lets through only what decodes; anything left is the client's fault too.
        log.warning("closing a collaboration client of %s: %s", self.key, exc)
        close = getattr(channel, "close", None)
        if close is not None:
            await close(CLOSE_MALFORMED, f"malformed message: {type(exc).__name__}")
        return True


def _log_exception(exception: Exception, logger: logging.Logger) -> bool:
    logger.error("collaboration room error", exc_info=exception)
    return True


class CollabHub:
    """The rooms of this process (started with the app, api/main.py)."""

    def __init__(self, services):
        self.services = services
        self.store = services.collab
        settings = services.settings
        self.max_message = settings.collab_max_message_bytes
        self.max_doc = settings.collab_max_doc_bytes
        self.rooms: dict[str, WorkflowRoom] = {}
        self.unsaved: dict[str, list[tuple[bytes, str]]] = defaultdict(list)
        self._locks: dict[str, anyio.Lock] = defaultdict(anyio.Lock)
        self.writing: dict[str, int] = defaultdict(int)  # updates of a room being stored
        self._joining: dict[str, list[bytes]] = {}        # relayed messages of rooms being opened
        self._tg: TaskGroup | None = None
        self.relay = None
        if settings.distributed:
            from .collab_relay import RedisRelay

            self.relay = RedisRelay(settings.redis, self._deliver)

    async def __aenter__(self) -> "CollabHub":
        self._tg = await anyio.create_task_group().__aenter__()
        if self.relay is not None:
            await self._tg.start(self.relay.run)
        return self

    async def __aexit__(self, *exc) -> None:
        self._tg.cancel_scope.cancel()
        await self._tg.__aexit__(None, None, None)
        self._tg = None

    def spawn(self, fn, *args) -> None:
        if self._tg is not None:
            self._tg.start_soon(fn, *args)

    async def publish(self, key: str, payload: bytes) -> None:
        if self.relay is not None:
            await self.relay.publish(key, payload)

    def _deliver(self, key: str, payload: bytes) -> None:
        room = self.rooms.get(key)
        if room is not None:
            room.remote(payload)
        elif key in self._joining:  # heard while the room loads: applied once it is there
            self._joining[key].append(payload)

    def _load(self, tenant: str, workflow_id: str) -> Doc:
        doc = Doc()
        for update in self.store.load(tenant, workflow_id):
            doc.apply_update(update)
        if is_empty(doc):
            record = self.services.workflows.get(tenant, workflow_id)
            if record is not None:
                seed = seed_update(record["spec"])
                doc.apply_update(seed)
                self.store.append(tenant, workflow_id, seed, None)
        return doc

    async def join(self, tenant: str, workflow_id: str) -> WorkflowRoom:
        key = f"{tenant}/{workflow_id}"
        async with self._locks[key]:
            room = self.rooms.get(key)
            if room is None:
                room = await self._open(tenant, workflow_id, key)
            room.users += 1
            return room

    async def _open(self, tenant: str, workflow_id: str, key: str) -> WorkflowRoom:
        self._joining[key] = []
        try:
            if self.relay is not None:
                await self.relay.subscribe(key)  # before loading: see collab_relay.py
            while self.writing[key] or self.unsaved.get(key):  # the room closed a moment ago
                await anyio.sleep(0.01)
            doc = await anyio.to_thread.run_sync(self._load, tenant, workflow_id)
            room = WorkflowRoom(self, tenant, workflow_id, doc)
            await self._tg.start(room.start)
            self._tg.start_soon(room.drain)
            self.rooms[key] = room
            for payload in self._joining[key]:
                room.remote(payload)
            return room
        finally:
            self._joining.pop(key, None)

    async def leave(self, room: WorkflowRoom) -> None:
        async with self._locks[room.key]:
            room.users -= 1
            if room.users > 0 or self.rooms.get(room.key) is not room:
                return
            del self.rooms[room.key]
            room.close_outbox()  # its drain stores what is queued, then ends
            await room.stop()
            if self.relay is not None:
                await self.relay.unsubscribe(room.key)
            unsaved = self.unsaved.pop(room.key, [])
            self.spawn(anyio.to_thread.run_sync, self._settle, room.tenant, room.workflow_id, unsaved)

    def _settle(self, tenant: str, workflow_id: str, unsaved: list[tuple[bytes, str]]) -> None:
        """A room closed: store what could not be stored, and fold old rows into one."""
        try:
            for update, subject in unsaved:
                self.store.append(tenant, workflow_id, update, subject)
            if self.store.count(tenant, workflow_id) > COMPACT_ROWS:
                self.store.compact(tenant, workflow_id, lambda ups: merge_updates(*ups),
                                   keep_after=self.store.last_version_time(tenant, workflow_id))
        except Exception:
            log.exception("cannot settle the stored document of %s/%s", tenant, workflow_id)


# ---------------------------------------------------------------- the endpoint


async def collab_socket(websocket: WebSocket) -> None:
    hub: CollabHub = websocket.app.state.collab
    workflow_id = websocket.path_params["workflow_id"]
    offered = websocket.scope.get("subprotocols") or []
    # accept first, then refuse: a browser sees the close code and reason only on an open socket
    await websocket.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in offered else None)
    try:
        principal = await principal_of(websocket)
        exists = await anyio.to_thread.run_sync(hub.services.workflows.exists, principal.tenant, workflow_id)
        if not exists:  # another tenant's workflow is not found either, as in the REST API
            raise Refused(CLOSE_NOT_FOUND, f"workflow {workflow_id!r} not found")
    except Refused as refused:
        await websocket.close(refused.code, refused.reason)
        return
    room = await hub.join(principal.tenant, workflow_id)
    channel = SocketChannel(websocket, room, Guard(room, principal, hub.max_message, hub.max_doc))
    try:
        await room.serve(channel)
    finally:
        await channel.close(1000, "")
        await hub.leave(room)


def install(app, services) -> None:
    """The route (before Studio's mount at `/`) and the hub (started by the app's lifespan)."""
    app.state.collab = CollabHub(services)
    # a plain Starlette route: the app-wide `authorize` dependency is for HTTP requests,
    # this socket authenticates itself when it opens (principal_of)
    app.router.routes.append(WebSocketRoute(PATH, collab_socket, name="workflow_collab"))

