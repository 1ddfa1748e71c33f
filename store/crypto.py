"""Encryption at rest of what runs carry (contract section 9): AES-256-GCM, one module.

With `AGENTFLOW_ENCRYPTION_KEY` set (32 random bytes, base64), every secret JSON value -
run inputs and states, step inputs and outputs (the trace is built from them), schedule
inputs, LangGraph checkpoints - is written as an envelope in its own JSON column:

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
    from ..settings import get_settings

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
    from ..settings import get_settings

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


# Every encrypted column, for `agentflow keys rotate`: (table, primary key, column).
ENCRYPTED_COLUMNS: list[tuple[str, str, str]] = [
    ("runs", "id", "input"), ("runs", "id", "state"),
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
    return total
