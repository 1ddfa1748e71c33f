"""Opaque cursors: base64url of a small JSON list. Clients pass them back unchanged."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime, timezone
from typing import Annotated, Any

from fastapi import Query

from .errors import ApiError

MAX_LIMIT = 200

Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Page size (1-200).")]
Cursor = Annotated[str | None, Query(max_length=1024, description="next_cursor of the previous page.")]


def encode(*parts: Any) -> str:
    raw = json.dumps([p.isoformat() if isinstance(p, datetime) else p for p in parts],
                     separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _bad() -> ApiError:
    return ApiError(422, "invalid cursor: pass the next_cursor of a previous page unchanged",
                    [{"path": "query.cursor", "message": "invalid cursor"}])


def decode(cursor: str, size: int) -> list[Any]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        parts = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise _bad() from None
    if not isinstance(parts, list) or len(parts) != size:
        raise _bad()
    return parts


def decode_str(cursor: str | None) -> str | None:
    """A cursor holding one string key (an id)."""
    if not cursor:
        return None
    (key,) = decode(cursor, 1)
    if not isinstance(key, str) or not key:
        raise _bad()
    return key


def decode_time_id(cursor: str | None) -> tuple[datetime, str] | None:
    """A cursor holding (timestamp, id)."""
    if not cursor:
        return None
    when, key = decode(cursor, 2)
    if not isinstance(when, str) or not isinstance(key, str):
        raise _bad()
    try:
        at = datetime.fromisoformat(when)
    except ValueError:
        raise _bad() from None
    if at.tzinfo is None:
        at = at.replace(tzinfo=timezone.utc)
    return at.astimezone(timezone.utc), key
