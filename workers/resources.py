"""Per-process resources of a worker: store, event bus, limiter, checkpointer, Redis."""

from __future__ import annotations

import threading
import time
from functools import lru_cache

import redis

from ..graph.secrets import install_log_redaction
from ..runs.events import RedisEventBus
from ..settings import get_settings
from ..store import crypto
from ..store.db import IdleCheck, session_factory
from .checkpoints import HoldingPostgresSaver
from ..store.runs import RunStore

_lock = threading.Lock()
_checkpointer = None


@lru_cache
def redis_client() -> redis.Redis:
    install_log_redaction()
    return redis.Redis.from_url(get_settings().redis_url or "redis://127.0.0.1:6379/0")


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

            pool = ConnectionPool(url, min_size=1, max_size=16, open=True, check=check, reset=idle.used,
                                  kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row})
            # encrypted with AGENTFLOW_ENCRYPTION_KEY set (store/crypto.py)
            saver = crypto.sealed_saver(HoldingPostgresSaver)(pool, serde=crypto.CheckpointSerde())
            with pool.connection() as conn:  # workers start together: one creates the tables
                # try-lock and sleep: a session blocked inside pg_advisory_lock holds a
                # snapshot, and the saver's CREATE INDEX CONCURRENTLY would wait on it forever.
                while not conn.execute("SELECT pg_try_advisory_lock(4242002) AS ok").fetchone()["ok"]:
                    time.sleep(0.1)
                try:
                    saver.setup()
                finally:
                    conn.execute("SELECT pg_advisory_unlock(4242002)")
            _checkpointer = saver
    return _checkpointer
