"""Encryption at rest of what runs carry (contract section 9): AES-256-GCM, one module.

With `AGENTFLOW_ENCRYPTION_KEY` set (32 random bytes, base64), every secret JSON value -
run inputs and states, step inputs and outputs (the trace is built from them), schedule
inputs - is written as an envelope in its own JSON column (`EncryptedJSON`; the run
driver's LangGraph checkpoints are sealed by `CheckpointSerde`, further down):

    {"enc": "v1", "kid": "<key id>", "n": "<nonce, base64>", "ct": "<ciphertext+tag, base64>"}

so no statement or index changes: ids, status, timings, tokens and cost stay plain columns
and stay searchable. The key id (a hash of the key, never the key) says which key opens a
value; the column's name is the associated data, so a value moved to another column does
not open. Without the setting nothing is encrypted and reads pass values through, as
before; plaintext rows written before a key was set stay readable (`agentflow keys
rotate` encrypts them).

Keys: `AGENTFLOW_ENCRYPTION_KEY` encrypts; `AGENTFLOW_ENCRYPTION_OLD_KEYS` (comma-separated)
only decrypt. A value under a key that is not configured raises `KeyUnavailable`, whose
message names the key id (the API answers 503 with it); it is never returned as garbage.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

from sqlalchemy import JSON
from sqlalchemy.types import TypeDecorator

from ..settings import get_settings

VERSION = "v1"
_ENVELOPE_KEYS = frozenset(("enc", "kid", "n", "ct"))


class KeyUnavailable(RuntimeError):
    """A stored value cannot be decrypted: its key is not configured, or it fails to
    authenticate (altered, or under another key with the same id)."""

    def __init__(self, kid: str, subject: str | None = None, reason: str = "not configured"):
        self.kid, self.subject, self.reason = kid, subject, reason
        what = subject or "a stored value"
        if reason == "not configured":
            msg = (f"{what} was encrypted with key id {kid}, which is not configured "
                   "(set AGENTFLOW_ENCRYPTION_KEY or add the key to AGENTFLOW_ENCRYPTION_OLD_KEYS)")
        else:
            msg = f"{what} under key id {kid} cannot be decrypted: {reason}"
        super().__init__(msg)

    def about(self, subject: str) -> "KeyUnavailable":
        return KeyUnavailable(self.kid, subject, self.reason)


class BadKey(ValueError):
    """A configured key is not 32 bytes of base64 (the message never quotes it)."""


def parse_key(text: str, name: str = "AGENTFLOW_ENCRYPTION_KEY") -> bytes:
    raw = text.strip().encode()
    raw = raw.replace(b"-", b"+").replace(b"_", b"/")  # the URL-safe alphabet too
    try:
        key = base64.b64decode(raw + b"=" * (-len(raw) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise BadKey(f"{name} is not valid base64 (generate one with `agentflow keys generate`)") from None
    if len(key) != 32:
        raise BadKey(f"{name} must decode to 32 bytes (AES-256), not {len(key)} "
                     "(generate one with `agentflow keys generate`)")
    return key


def key_id(key: bytes) -> str:
    """A short public name of a key: a hash of it, which tells nothing about it."""
    return hashlib.sha256(b"agentflow-key-id\x00" + key).hexdigest()[:16]


def generate_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@dataclass
class Keyring:
    """The current key (encrypts; None = encryption off) and every key that decrypts."""

    current: bytes | None = None
    old: list[bytes] = field(default_factory=list)

    def __post_init__(self) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        keys = ([self.current] if self.current else []) + list(self.old)
        self._ciphers = {key_id(k): AESGCM(k) for k in keys}
        self.kid = key_id(self.current) if self.current else None

    @property
    def enabled(self) -> bool:
        return self.current is not None

    def kids(self) -> list[str]:
        return list(self._ciphers)

    def encrypt(self, plaintext: bytes, where: str) -> tuple[str, bytes, bytes]:
        """(key id, nonce, ciphertext+tag) under the current key."""
        assert self.kid is not None, "encryption is not configured"
        nonce = os.urandom(12)  # random 96-bit nonces: safe for far more values than a store holds
        return self.kid, nonce, self._ciphers[self.kid].encrypt(nonce, plaintext, where.encode())

    def decrypt(self, kid: str, nonce: bytes, ciphertext: bytes, where: str) -> bytes:
        from cryptography.exceptions import InvalidTag

        cipher = self._ciphers.get(kid)
        if cipher is None:
            raise KeyUnavailable(kid)
        try:
            return cipher.decrypt(nonce, ciphertext, where.encode())
        except InvalidTag:
            raise KeyUnavailable(kid, reason="it fails authentication (altered, or moved from another column)") \
                from None

    # ---- JSON values
    def seal(self, value: Any, where: str) -> Any:
        """The envelope of a JSON value (None stays None: nothing to hide)."""
        if value is None:
            return None
        plain = json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
        kid, nonce, ct = self.encrypt(plain, where)
        return {"enc": VERSION, "kid": kid, "n": _b64(nonce), "ct": _b64(ct)}

    def open(self, value: Any, where: str) -> Any:
        """The JSON value behind an envelope; anything else (plaintext) as it is."""
        if not is_sealed(value):
            return value
        try:
            nonce, ct = base64.b64decode(value["n"]), base64.b64decode(value["ct"])
        except (binascii.Error, ValueError, TypeError):
            raise KeyUnavailable(str(value.get("kid")), reason="the envelope is damaged") from None
        return json.loads(self.decrypt(value["kid"], nonce, ct, where))


def is_sealed(value: Any) -> bool:
    return isinstance(value, dict) and value.get("enc") == VERSION and value.keys() == _ENVELOPE_KEYS


def sealed_kid(value: Any) -> str | None:
    return value["kid"] if is_sealed(value) else None


# ---------------------------------------------------------------- the configured keyring

_cache: tuple[Any, Keyring] | None = None


def keyring() -> Keyring:
    """The keyring of the current settings (rebuilt when the settings object changes,
    e.g. after `get_settings.cache_clear()` in tests)."""
    global _cache
    settings = get_settings()
    cached = _cache
    if cached is not None and cached[0] is settings:
        return cached[1]
    ring = keyring_from(settings)
    _cache = (settings, ring)
    return ring


def configure(settings: Any) -> Keyring:
    """Use the keys of these settings in this process (the API's own settings object, which
    may not be the cached one); raises BadKey for a malformed key, so a server fails at start."""
    global _cache
    ring = keyring_from(settings)
    _cache = (get_settings(), ring)
    return ring


def reset() -> None:
    """Forget the keyring: the next use reads the settings again."""
    global _cache
    _cache = None


def keyring_from(settings: Any) -> Keyring:
    current = settings.encryption_key.get_secret_value() if settings.encryption_key else ""
    old = [k for k in (settings.encryption_old_keys.get_secret_value() if settings.encryption_old_keys
                       else "").split(",") if k.strip()]
    return Keyring(parse_key(current) if current.strip() else None,
                   [parse_key(k, "AGENTFLOW_ENCRYPTION_OLD_KEYS") for k in old])


def seal(value: Any, where: str) -> Any:
    """`value` encrypted for column `where` ("runs.input") when a key is set, else as it is."""
    ring = keyring()
    return ring.seal(value, where) if ring.enabled else value


def open_value(value: Any, where: str) -> Any:
    return keyring().open(value, where) if is_sealed(value) else value


@contextmanager
def about(subject: str) -> Iterator[None]:
    """Name what could not be decrypted ("run X") in the error raised inside."""
    try:
        yield
    except KeyUnavailable as exc:
        raise exc.about(subject) from None


class EncryptedJSON(TypeDecorator):
    """A JSON column whose values are sealed on write and opened on read (see above); with
    no key set it behaves as JSON. `where` names the column: it is the associated data."""

    impl = JSON
    cache_ok = True

    def __init__(self, where: str):
        super().__init__()
        self.where = where

    def process_bind_param(self, value: Any, dialect: Any) -> Any:
        return seal(value, self.where)

    def process_result_value(self, value: Any, dialect: Any) -> Any:
        return open_value(value, self.where)


# ---------------------------------------------------------------- LangGraph checkpoints
# The run driver's Postgres checkpointer keeps a run's state in its own tables: blobs go
# through a serializer (encrypted here, the key id in the blob's `type`), but the stock
# saver keeps plain values (str, numbers) inline in the checkpoint's JSONB. With a key set,
# strings are boxed before `put` so they go to blobs too; numbers and booleans (tokens,
# cost, branch markers) stay inline.

CHECKPOINT_AAD = "checkpoint"
CIPHER_PREFIX = "af1."  # "<serde type>+af1.<key id>" in checkpoint_blobs.type / checkpoint_writes.type


class _Boxed:
    """A string channel value on its way to a blob (unboxed by CheckpointSerde)."""

    __slots__ = ("value",)

    def __init__(self, value: str):
        self.value = value


class CheckpointSerde:
    """LangGraph's serializer (JsonPlusSerializer) with the bytes sealed under the current
    key; with no key, it writes what the stock one writes."""

    def __init__(self, inner: Any = None):
        from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

        self.inner = inner or JsonPlusSerializer()

    def dumps_typed(self, obj: Any) -> tuple[str, bytes]:
        if isinstance(obj, _Boxed):
            obj = obj.value
        typ, data = self.inner.dumps_typed(obj)
        ring = keyring()
        if not ring.enabled or data is None:
            return typ, data
        kid, nonce, ct = ring.encrypt(bytes(data), CHECKPOINT_AAD)
        return f"{typ}+{CIPHER_PREFIX}{kid}", nonce + ct

    def loads_typed(self, data: tuple[str, bytes]) -> Any:
        typ, blob = data
        if "+" in typ:
            typ, cipher = typ.split("+", 1)
            if not cipher.startswith(CIPHER_PREFIX):
                raise KeyUnavailable(cipher, "a checkpoint", reason="it was written with an unknown cipher")
            blob = keyring().decrypt(cipher[len(CIPHER_PREFIX):], blob[:12], blob[12:], CHECKPOINT_AAD)
        return self.inner.loads_typed((typ, blob))


class SealedCheckpoints:
    """Mixin for a LangGraph saver: with a key set, string channel values go to (encrypted)
    blobs instead of the checkpoint's plain JSONB."""

    def put(self, config: Any, checkpoint: Any, metadata: Any, new_versions: Any) -> Any:
        if keyring().enabled:
            values = checkpoint["channel_values"]
            if any(isinstance(v, str) for v in values.values()):
                checkpoint = {**checkpoint, "channel_values": {
                    k: _Boxed(v) if isinstance(v, str) else v for k, v in values.items()}}
        return super().put(config, checkpoint, metadata, new_versions)  # type: ignore[misc]


def sealed_saver(saver_class: type) -> type:
    """`saver_class` with its string values boxed; build it with `serde=CheckpointSerde()`."""
    return type(f"Sealed{saver_class.__name__}", (SealedCheckpoints, saver_class), {})


# Every encrypted column, for `agentflow keys rotate`: (table, primary key, column).
ENCRYPTED_COLUMNS: list[tuple[str, str, str]] = [
    ("runs", "id", "input"), ("runs", "id", "state"), ("runs", "id", "waiting_for"),
    ("steps", "id", "input"), ("steps", "id", "output"),
    ("schedules", "id", "input"),
]


# ---------------------------------------------------------------- rotation

def _done_prefix(kid: str) -> str:
    """How a value sealed under `kid` starts in its column (the JSON type writes json.dumps):
    rows that start so are skipped by the query; the check in Python is what decides."""
    return json.dumps({"enc": VERSION, "kid": kid})[:-1] + "%"


def rotate(engine: Any, batch_size: int = 200, progress: Any = None, ring: Keyring | None = None) -> int:
    """Re-encrypt every encrypted (or still plaintext) value under the current key; returns
    how many values were rewritten. A batch of rows is read by primary key and rewritten one
    row at a time with a compare-and-set on the stored text, in its own short transaction,
    so writers are never held for long and a value written meanwhile is never overwritten;
    stopping and starting again resumes (values already under the current key are skipped)."""
    from sqlalchemy import text

    ring = ring or keyring()
    if not ring.enabled:
        raise BadKey("AGENTFLOW_ENCRYPTION_KEY is not set: it names the key to rotate to")
    pg = engine.dialect.name == "postgresql"
    total = 0
    for table, pk, column in ENCRYPTED_COLUMNS:
        where, after, done = f"{table}.{column}", None, 0
        new_value = f"CAST(:new AS {'json' if pg else 'TEXT'})"
        select_sql = (f"SELECT {pk}, CAST({column} AS TEXT) FROM {table} WHERE {column} IS NOT NULL "
                      f"AND CAST({column} AS TEXT) NOT LIKE :skip {{after}} ORDER BY {pk} LIMIT :n")
        first, following = text(select_sql.format(after="")), text(select_sql.format(after=f"AND {pk} > :after"))
        put = text(f"UPDATE {table} SET {column} = {new_value} WHERE {pk} = :pk AND CAST({column} AS TEXT) = :old")
        while True:
            with engine.begin() as conn:  # one short transaction a batch
                params = {"skip": _done_prefix(ring.kid), "n": batch_size, "after": after}
                rows = conn.execute(first if after is None else following, params).all()
                for key, old in rows:
                    value = json.loads(old)
                    if value is None or sealed_kid(value) == ring.kid:
                        continue
                    with about(f"{where} of row {key}"):
                        plain = ring.open(value, where)
                    new = json.dumps(ring.seal(plain, where))
                    done += conn.execute(put, {"new": new, "pk": key, "old": old}).rowcount
            if not rows:
                break
            after = rows[-1][0]
            if progress is not None:
                progress(f"{where}: {done} re-encrypted so far (up to row {after})")
            if len(rows) < batch_size:
                break
        total += done
        if progress is not None:
            progress(f"{where}: {done} value(s) re-encrypted")
    if pg:
        total += _rotate_checkpoints(engine, ring, batch_size, progress)
    return total


def _reseal_blob(ring: Keyring, typ: str, blob: bytes) -> tuple[str, bytes]:
    """A checkpoint blob's (type, bytes) sealed under the current key (opened first if sealed)."""
    base, _, cipher = typ.partition("+")
    data = bytes(blob)
    if cipher:
        if not cipher.startswith(CIPHER_PREFIX):
            raise KeyUnavailable(cipher, reason="it was written with an unknown cipher")
        data = ring.decrypt(cipher[len(CIPHER_PREFIX):], data[:12], data[12:], CHECKPOINT_AAD)
    kid, nonce, ct = ring.encrypt(data, CHECKPOINT_AAD)
    return f"{base}+{CIPHER_PREFIX}{kid}", nonce + ct


def _rotate_checkpoints(engine: Any, ring: Keyring, batch_size: int, progress: Any) -> int:
    """The run driver's LangGraph tables (PostgreSQL, when they exist): blobs and task writes
    re-encrypted, and string values a checkpoint kept inline in its JSONB (written before a
    key was set) moved to encrypted blobs, where the saver reads them first."""
    from sqlalchemy import inspect, text

    if not inspect(engine).has_table("checkpoint_blobs"):
        return 0
    total, current = 0, f"%+{CIPHER_PREFIX}{ring.kid}"
    for table, keys in (("checkpoint_blobs", ("thread_id", "checkpoint_ns", "channel", "version")),
                        ("checkpoint_writes", ("thread_id", "checkpoint_ns", "checkpoint_id", "task_id", "idx"))):
        cols = ", ".join(keys)
        row_key = f"({cols}) > ({', '.join(f':k{i}' for i in range(len(keys)))})"
        select_sql = (f"SELECT {cols}, type, blob FROM {table} WHERE blob IS NOT NULL AND type <> 'empty' "
                      f"AND type NOT LIKE :current {{after}} ORDER BY {cols} LIMIT :n")
        first, following = text(select_sql.format(after="")), text(select_sql.format(after=f"AND {row_key}"))
        match = " AND ".join(f"{k} = :k{i}" for i, k in enumerate(keys))
        put = text(f"UPDATE {table} SET type = :type, blob = :blob WHERE {match} AND type = :old_type "
                   "AND blob = :old_blob")
        after, done = None, 0
        while True:
            with engine.begin() as conn:
                params = {"current": current, "n": batch_size}
                rows = conn.execute(first if after is None else following,
                                    {**params, **{f"k{i}": v for i, v in enumerate(after or ())}}).all()
                for row in rows:
                    *key, typ, blob = row
                    with about(f"a checkpoint of run {key[0]}"):
                        new_type, new_blob = _reseal_blob(ring, typ, blob)
                    done += conn.execute(put, {**{f"k{i}": v for i, v in enumerate(key)}, "type": new_type,
                                               "blob": new_blob, "old_type": typ, "old_blob": bytes(blob)}).rowcount
            if not rows:
                break
            after = tuple(rows[-1][:len(keys)])
            if len(rows) < batch_size:
                break
        total += done
        if progress is not None:
            progress(f"{table}: {done} value(s) re-encrypted")
    total += _seal_inline_checkpoint_values(engine, ring, batch_size, progress)
    return total


def _seal_inline_checkpoint_values(engine: Any, ring: Keyring, batch_size: int, progress: Any) -> int:
    from sqlalchemy import text

    serde = CheckpointSerde()
    pick = text("SELECT thread_id, checkpoint_ns, checkpoint_id, CAST(checkpoint AS TEXT) FROM checkpoints "
                "WHERE EXISTS (SELECT 1 FROM jsonb_each(checkpoint -> 'channel_values') v "
                "WHERE jsonb_typeof(v.value) = 'string') "
                "AND (thread_id, checkpoint_ns, checkpoint_id) > (:t, :ns, :id) "
                "ORDER BY thread_id, checkpoint_ns, checkpoint_id LIMIT :n")
    blob = text("INSERT INTO checkpoint_blobs (thread_id, checkpoint_ns, channel, version, type, blob) "
                "VALUES (:t, :ns, :channel, :version, :type, :blob) "
                "ON CONFLICT (thread_id, checkpoint_ns, channel, version) DO NOTHING")
    put = text("UPDATE checkpoints SET checkpoint = CAST(:new AS jsonb) WHERE thread_id = :t "
               "AND checkpoint_ns = :ns AND checkpoint_id = :id AND checkpoint = CAST(:old AS jsonb)")
    after, done = ("", "", ""), 0
    while True:
        with engine.begin() as conn:
            rows = conn.execute(pick, {"t": after[0], "ns": after[1], "id": after[2], "n": batch_size}).all()
            for thread_id, ns, checkpoint_id, old in rows:
                checkpoint = json.loads(old)
                values, versions = checkpoint.get("channel_values") or {}, checkpoint.get("channel_versions") or {}
                moved = [k for k, v in values.items() if isinstance(v, str) and k in versions]
                for channel in moved:
                    plain_type, data = serde.inner.dumps_typed(values.pop(channel))
                    typ, sealed = _reseal_blob(ring, plain_type, data)
                    conn.execute(blob, {"t": thread_id, "ns": ns, "channel": channel,
                                        "version": str(versions[channel]), "type": typ, "blob": sealed})
                if moved:
                    done += conn.execute(put, {"t": thread_id, "ns": ns, "id": checkpoint_id, "old": old,
                                               "new": json.dumps(checkpoint)}).rowcount
        if not rows:
            break
        after = tuple(rows[-1][:3])
        if len(rows) < batch_size:
            break
    if progress is not None:
        progress(f"checkpoints: {done} checkpoint(s) had plain values moved to encrypted blobs")
    return done
