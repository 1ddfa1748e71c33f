"""Per-process resources of a worker: store, event bus, limiter, checkpointer, Redis."""

from __future__ import annotations

import threading
from functools import lru_cache

from ..graph.secrets import install_log_redaction
from ..redisconn import redis_client as make_redis_client
from ..runs.events import RedisEventBus
from ..settings import get_settings
from ..store import crypto
from ..store.db import IdleCheck, psycopg_pooler_args, session_factory
from .checkpoints import HoldingPostgresSaver
from ..store.runs import RunStore

_lock = threading.Lock()
_checkpointer = None


@lru_cache
def redis_client():
    install_log_redaction()
    return make_redis_client(get_settings().redis or "redis://127.0.0.1:6379/0")


@lru_cache
def store() -> RunStore:
    return RunStore(session_factory(get_settings().db_url))


@lru_cache
def bus() -> RedisEventBus:
    return RedisEventBus(redis_client())


@lru_cache
def limiter():
    from ..ratelimit.factory import limiter_from_env

    return limiter_from_env()


def checkpointer():
    """LangGraph's Postgres checkpointer on a small pool (created once per process); a run's
    checkpoints are written after its remote steps (workers/checkpoints.py)."""
    global _checkpointer
    with _lock:
        if _checkpointer is None:
            from psycopg.rows import dict_row
            from psycopg_pool import ConnectionPool

            url = get_settings().db_url
            if not url.startswith("postgres"):
                raise RuntimeError("distributed mode needs DATABASE_URL to point at PostgreSQL")
            url = url.replace("postgresql+psycopg://", "postgresql://")
            # check: a pooled connection idle for a while is tested before it is handed out,
            # so one that the server dropped (restart, failover, pg_terminate_backend) is
            # replaced; a failure on a recently used one is retried by the run task.
            idle = IdleCheck()

            def check(conn) -> None:
                if idle.stale(conn):
                    ConnectionPool.check_connection(conn)

            # prepare_threshold 0: every statement prepared at once (a checkpoint write is a
            # handful of statements on each step), unless a pooler forbids it
            kwargs = {"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row, **psycopg_pooler_args()}
            pool = ConnectionPool(url, min_size=1, max_size=16, open=True, check=check, reset=idle.used,
                                  kwargs=kwargs)
            # encrypted with AGENTFLOW_ENCRYPTION_KEY set (store/crypto.py)
            saver = crypto.sealed_saver(HoldingPostgresSaver)(pool, serde=crypto.CheckpointSerde())
            setup_checkpoint_tables(pool, saver)
            _checkpointer = saver
    return _checkpointer


def setup_checkpoint_tables(pool, saver) -> None:
    """Create or upgrade LangGraph's checkpoint tables (`saver.MIGRATIONS`, as its `setup()`
    does) once, however many workers start together: one transaction under a
    transaction-level advisory lock. A session-level lock would not survive PgBouncer's
    transaction pooling (it stays on whichever server connection took it). LangGraph builds
    its indexes CONCURRENTLY, which cannot run in a transaction: here they are built plainly
    (on tables that are new or, on an upgrade, briefly blocking writes to the one indexed)."""
    with pool.connection() as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(4242002)")
        conn.execute(saver.MIGRATIONS[0])
        row = conn.execute("SELECT v FROM checkpoint_migrations ORDER BY v DESC LIMIT 1").fetchone()
        for v in range((-1 if row is None else row["v"]) + 1, len(saver.MIGRATIONS)):
            conn.execute(saver.MIGRATIONS[v].replace(" CONCURRENTLY ", " "))
            conn.execute("INSERT INTO checkpoint_migrations (v) VALUES (%s)", (v,))
