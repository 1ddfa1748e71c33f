"""Engine, sessions and migrations for the configured database."""

from __future__ import annotations

import select
import threading
import time
import weakref
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).parent / "migrations"
_engines: dict[str, Engine] = {}
_lock = threading.Lock()


def normalize_url(url: str) -> str:
    """Accept plain postgresql:// URLs and use the psycopg 3 driver for them."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://"):]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    return url


def safe_url(url: str) -> str:
    """The database URL with its password hidden, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<database>"


def get_engine(url: str) -> Engine:
    url = normalize_url(url)
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            if url.startswith("sqlite"):
                engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
                event.listen(engine, "connect", _sqlite_pragmas)
            else:
                engine = create_engine(url, pool_size=10, max_overflow=20, pool_recycle=300,
                                       connect_args={"connect_timeout": 5, **psycopg_pooler_args()})
                ping_when_idle(engine)
            _engines[url] = engine
    return engine


def psycopg_pooler_args() -> dict[str, Any]:
    """psycopg connection options for the configured pooler: behind PgBouncer in transaction
    mode, never prepare statements server-side (AGENTFLOW_DB_POOLER=pgbouncer)."""
    from ..settings import get_settings

    return {"prepare_threshold": None} if get_settings().transaction_pooler else {}


# A pooled connection idle this long, or one the server has written to since (it does
# when it terminates the backend), is pinged before use; any other is trusted. A ping per
# checkout was a round trip for every store call of every step. A connection that died
# silently within the window fails its use instead, which the workers' store calls retry
# on a fresh connection (store.runs.retry_on_disconnect).
IDLE_PING_SECONDS = 2.0


class IdleCheck:
    """Remembers when each connection was last handed back; says when to ping it."""

    def __init__(self, idle: float = IDLE_PING_SECONDS):
        self.idle = idle
        self._last: "weakref.WeakKeyDictionary[Any, float]" = weakref.WeakKeyDictionary()

    def used(self, conn: Any) -> None:
        self._last[conn] = time.monotonic()

    def stale(self, conn: Any) -> bool:
        last = self._last.get(conn)
        return last is None or time.monotonic() - last > self.idle or _server_spoke(conn)


def _server_spoke(conn: Any) -> bool:
    """Has the server sent something to an idle connection? It does when it terminates the
    backend (restart, pg_terminate_backend): a FATAL message, then EOF. A poll of the
    socket costs a system call, not a round trip."""
    try:
        fd = conn.pgconn.socket
    except Exception:  # not psycopg, or already closed: let the real check decide
        return True
    try:
        return bool(select.select([fd], [], [], 0)[0])
    except (OSError, ValueError):
        return True


def ping_when_idle(engine: Engine, idle: float = IDLE_PING_SECONDS) -> None:
    check = IdleCheck(idle)

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn, _record) -> None:
        check.used(dbapi_conn)  # just opened: no need to ping it

    @event.listens_for(engine, "checkin")
    def _checkin(dbapi_conn, _record) -> None:
        if dbapi_conn is not None:
            check.used(dbapi_conn)

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_conn, _record, _proxy) -> None:
        if not check.stale(dbapi_conn):
            return
        try:
            engine.dialect.do_ping(dbapi_conn)
        except Exception as exc:
            # the pool discards this connection and hands out a fresh one
            raise DisconnectionError(f"stale pooled connection: {type(exc).__name__}") from exc


@contextmanager
def one_statement(engine: Engine) -> Iterator[Any]:
    """A connection for work that needs no transaction around it (one write, or reads that
    need no common snapshot): on Postgres it runs in autocommit, saving the BEGIN and
    COMMIT round trips (a run's steps are written this way, several times a run); SQLite
    keeps its transaction."""
    if engine.dialect.name == "sqlite":
        with engine.begin() as conn:
            yield conn
    else:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            yield conn


def autocommit_one(engine: Engine, sql: str, params: dict[str, Any]) -> tuple | None:
    """First row of one statement run in autocommit on the pooled driver connection
    (psycopg), with no SQLAlchemy compile or result layer: the submit path's insert costs
    half as much CPU (bench/api_submit.py). `sql` uses the driver's %(name)s parameters.
    Errors come out as SQLAlchemy's DBAPIError, a dropped connection invalidated, like
    any other statement's, so `retry_on_disconnect` and the API's 503 handling apply."""
    with one_statement(engine) as conn:
        raw = conn.connection.driver_connection
        dbapi = engine.dialect.loaded_dbapi
        try:
            return raw.execute(sql, params).fetchone()
        except dbapi.Error as exc:
            gone = engine.dialect.is_disconnect(exc, raw, None)
            if gone:
                conn.invalidate(exc)
            raise DBAPIError.instance(sql, params, exc, dbapi.Error, connection_invalidated=gone) from exc


def dispose_all() -> None:
    """Forget pooled connections (after a fork) without closing the parent's sockets."""
    with _lock:
        for engine in _engines.values():
            engine.dispose(close=False)


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    # WAL lets the API read while a run writes its steps; FKs are off by default in SQLite.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def session_factory(url: str) -> sessionmaker[Session]:
    return sessionmaker(get_engine(url), expire_on_commit=False)


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", normalize_url(url).replace("%", "%%"))
    return cfg


def migrate(url: str) -> None:
    """Bring the database to the newest schema (idempotent)."""
    engine = get_engine(url)
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # Two processes starting at once must not both create the tables.
            from sqlalchemy import text
            conn.execute(text("SELECT pg_advisory_xact_lock(4242001)"))
        cfg = alembic_config(url)
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
