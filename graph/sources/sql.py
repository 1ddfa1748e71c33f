"""Read-only SQL through SQLAlchemy, for PostgreSQL and SQLite.

Queries run with bound parameters only, inside a transaction the database itself
keeps read-only, under a statement timeout, and return at most `max_rows` rows as
JSON-safe dicts.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import sqlite3
import threading
import time
import uuid
from typing import Any

import psycopg
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine

from ..errors import ProviderError, StepError
from ..secrets import redact

_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


def normalize_dsn(dsn: str) -> str:
    """`postgresql://` / `postgres://` -> the psycopg 3 driver we ship with."""
    for prefix in ("postgresql://", "postgres://"):
        if dsn.startswith(prefix):
            return "postgresql+psycopg://" + dsn[len(prefix):]
    return dsn


def get_engine(dsn: str) -> Engine:
    """One engine (and pool) per DSN, shared by every node and run in this process."""
    url = normalize_dsn(dsn)
    with _engines_lock:
        engine = _engines.get(url)
        if engine is None:
            engine = _create_engine(url)
            _engines[url] = engine
        return engine


def _create_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, pool_pre_ping=True)

        @event.listens_for(engine, "connect")
        def _query_only(dbapi_conn, _record):  # every new connection refuses writes
            dbapi_conn.execute("PRAGMA query_only = ON")

        return engine
    if not url.startswith("postgresql+psycopg"):
        return sa.create_engine(url, pool_pre_ping=True)
    engine = sa.create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10,
                              connect_args={"connect_timeout": 10})

    @event.listens_for(engine, "connect")
    def _one_statement(dbapi_conn, _record):
        dbapi_conn.cursor_factory = _OneStatementCursor

    return engine


class _OneStatementCursor(psycopg.Cursor):
    """Always speak PostgreSQL's extended query protocol, which runs exactly one
    statement. psycopg sends a query without parameters with the simple protocol,
    where "COMMIT; DELETE FROM t" would end our read-only transaction and then write.
    (`_execute_send` is psycopg's internal hook; tests/test_nodes_db.py guards it.)"""

    def _execute_send(self, query, *, force_extended: bool = False, binary=None):
        super()._execute_send(query, force_extended=True, binary=binary)


def dispose_engine(dsn: str) -> None:
    """Close the pool of one DSN (e.g. before its schema is dropped)."""
    with _engines_lock:
        engine = _engines.pop(normalize_dsn(dsn), None)
    if engine is not None:
        engine.dispose()


def dispose_engines() -> None:
    """Close every pooled connection (tests, shutdown)."""
    with _engines_lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()


def json_safe(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else None
    if isinstance(value, decimal.Decimal):
        return float(value) if value.is_finite() else None
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [json_safe(v) for v in value]
    return str(value)


def run_readonly(source_id: str, dsn: str, query: str, params: dict[str, Any], *,
                 max_rows: int, timeout_ms: int) -> tuple[list[dict], bool]:
    """Run one query read-only. Returns (rows, truncated)."""
    engine = get_engine(dsn)
    timeout_ms = max(1, int(timeout_ms))
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "postgresql":
                # Must be the transaction's first statements; SET LOCAL ends with it.
                conn.exec_driver_sql("SET TRANSACTION READ ONLY")
                conn.exec_driver_sql(f"SET LOCAL statement_timeout = {timeout_ms}")
                return _fetch(conn, query, params, max_rows)
            if engine.dialect.name == "sqlite":
                conn.exec_driver_sql("PRAGMA query_only = ON")
                raw = conn.connection.driver_connection
                deadline = time.monotonic() + timeout_ms / 1000
                # SQLite has no statement timeout: interrupt from its progress callback.
                raw.set_progress_handler(lambda: 1 if time.monotonic() > deadline else 0, 1000)
                # query_only stops writes to the database, not ATTACH (reads any file,
                # creates one) or `PRAGMA query_only = OFF`: allow reading and nothing else.
                raw.set_authorizer(_sqlite_read_only)
                try:
                    return _fetch(conn, query, params, max_rows)
                finally:
                    raw.set_authorizer(None)
                    raw.set_progress_handler(None, 0)
            return _fetch(conn, query, params, max_rows)
    except sa.exc.DBAPIError as exc:
        raise _convert(exc, source_id, timeout_ms) from None
    except sa.exc.StatementError as exc:  # e.g. a bind parameter without a value
        raise StepError(redact(f"query for database source '{source_id}' is not valid: "
                               f"{str(exc.orig or exc).splitlines()[0]}")) from None
    except sa.exc.ArgumentError as exc:
        raise StepError(redact(f"database source '{source_id}' has an unusable DSN: {exc}")) from None


_SQLITE_READ_ACTIONS = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION,
                        sqlite3.SQLITE_RECURSIVE}
_SQLITE_READ_PRAGMAS = {"table_info", "table_xinfo", "table_list", "index_list", "index_info",
                        "index_xinfo", "foreign_key_list"}


def _sqlite_read_only(action: int, arg1, arg2, db_name, trigger) -> int:
    if action in _SQLITE_READ_ACTIONS:
        return sqlite3.SQLITE_OK
    if action == sqlite3.SQLITE_PRAGMA and (arg1 or "").lower() in _SQLITE_READ_PRAGMAS:
        return sqlite3.SQLITE_OK
    return sqlite3.SQLITE_DENY


def _fetch(conn: sa.Connection, query: str, params: dict[str, Any], max_rows: int) -> tuple[list[dict], bool]:
    # Nothing is committed: leaving `engine.connect()` rolls the transaction back.
    result = conn.execute(sa.text(query), params)
    if not result.returns_rows:
        return [], False
    rows = result.mappings().fetchmany(max_rows + 1)
    return [json_safe(dict(r)) for r in rows[:max_rows]], len(rows) > max_rows


def _convert(exc: sa.exc.DBAPIError, source_id: str, timeout_ms: int) -> StepError:
    orig = exc.orig
    detail = redact(str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__)
    label = f"database source '{source_id}'"
    sqlstate = getattr(orig, "sqlstate", None) or ""
    if sqlstate == "57014" or (isinstance(orig, sqlite3.OperationalError) and "interrupted" in str(orig)):
        return ProviderError(f"query on {label} was cancelled: it ran longer than the statement timeout "
                             f"of {timeout_ms} ms", retryable=False)
    if sqlstate == "42601" and "multiple commands" in str(orig):
        return StepError(f"{label} refused the query: db nodes run exactly one SQL statement")
    if sqlstate == "25006" or "readonly database" in str(orig) or "read-only transaction" in str(orig):
        return StepError(f"{label} refused to write: db nodes run read-only queries ({detail})")
    if isinstance(orig, sqlite3.DatabaseError) and any(
            m in str(orig) for m in ("not authorized", "authorization denied")):
        return StepError(f"{label} refused the query: db nodes run read-only queries ({detail})")
    if exc.connection_invalidated or sqlstate.startswith(("08", "53", "57P")) or (
            not sqlstate and isinstance(exc, sa.exc.OperationalError) and not isinstance(orig, sqlite3.Error)):
        return ProviderError(f"could not use {label}: {detail}", retryable=True)
    if isinstance(orig, sqlite3.Warning) or "one statement at a time" in str(orig):
        return StepError(f"{label} refused the query: db nodes run exactly one SQL statement")
    if isinstance(orig, sqlite3.OperationalError) and "locked" in str(orig):
        return ProviderError(f"{label} is busy: {detail}", retryable=True)
    return StepError(f"query on {label} failed: {detail}")
