"""Shared bench plumbing: fresh database + Redis db, worker processes, percentiles."""

from __future__ import annotations

import os
import platform
import signal
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# SIGTERM (e.g. from `timeout`) unwinds like an exception, so started workers are stopped.
signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
PG = os.environ.get("AGENTFLOW_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
# make bench (run_all.py) points this at its private redis-server
REDIS_BASE_ENV = "AGENTFLOW_BENCH_REDIS"


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()}"


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    k = min(len(values) - 1, max(0, round(p / 100 * (len(values) - 1))))
    return values[k]


@contextmanager
def fresh_env(redis_db: int = 9):
    """A new Postgres database and a flushed Redis db; yields the env for child processes."""
    import psycopg
    import redis

    name = "af_bench_" + uuid.uuid4().hex[:8]
    with psycopg.connect(PG, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    db_url = PG.rsplit("/", 1)[0] + "/" + name
    redis_url = f"{os.environ.get(REDIS_BASE_ENV, 'redis://127.0.0.1:6379')}/{redis_db}"
    redis.Redis.from_url(redis_url).flushdb()
    env = dict(os.environ, DATABASE_URL=db_url, REDIS_URL=redis_url, PYTHONUNBUFFERED="1",
               AGENTFLOW_HOME=f"/tmp/{name}")
    from agentflow.store.db import get_engine, migrate

    migrate(db_url)
    try:
        yield env
    finally:
        get_engine(db_url).dispose()
        with psycopg.connect(PG, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        redis.Redis.from_url(redis_url).flushdb()


@contextmanager
def workers(env: dict, groups: list[tuple]):
    """Start `agentflow worker` processes: (name, queues, concurrency[, pool]); wait for their ping."""
    from agentflow.workers.launch import WorkerProcesses

    procs = WorkerProcesses(env)
    try:
        for name, queues, conc, *pool in groups:
            procs.start(name, queues, conc, pool=pool[0] if pool else "prefork", log_level="warning")
        procs.wait_ready([g[0] for g in groups])
        yield
    finally:
        procs.stop_all()


@contextmanager
def default_workers(env: dict, count: int = 2, prefix: str = "w"):
    """`count` workers started as a user starts them: `agentflow worker` with no arguments
    (every queue, its default pool and concurrency). Yields their process-group ids."""
    from agentflow.workers.launch import WorkerProcesses

    procs = WorkerProcesses(env)
    names = [f"{prefix}{i}" for i in range(count)]
    try:
        for name in names:
            procs.start(name, None, None, pool=None, log_level="warning")
        procs.wait_ready(names)
        yield {procs.procs[n].pid for n in names}
    finally:
        procs.stop_all()
