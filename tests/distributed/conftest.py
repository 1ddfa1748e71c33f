"""Distributed-mode fixtures: a fresh Postgres database, a Redis db, real Celery workers.

Workers are real `agentflow worker` processes (prefork pools), one group per queue, as
`make up` starts them. Each test module gets its own database and Redis db number.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

from tests.fixtures_servers import pg_base_url

REDIS_HOST = "127.0.0.1"


def _redis_ok() -> bool:
    try:
        import redis

        return bool(redis.Redis(host=REDIS_HOST, socket_connect_timeout=2).ping())
    except Exception:
        return False


@pytest.fixture(scope="module")
def dist_env(tmp_path_factory):
    """Environment for API and workers: fresh database + Redis db, short visibility timeout."""
    base = pg_base_url()
    if base is None:
        pytest.skip("PostgreSQL is not reachable at 127.0.0.1:5432; distributed tests need it")
    if not _redis_ok():
        pytest.skip("Redis is not reachable at 127.0.0.1:6379; distributed tests need it")
    import psycopg
    import redis

    dbname = "af_" + uuid.uuid4().hex[:10]
    with psycopg.connect(base, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{dbname}"')
    db_url = base.rsplit("/", 1)[0] + "/" + dbname
    redis_db = 1 + (uuid.uuid4().int % 14)
    redis_url = f"redis://{REDIS_HOST}:6379/{redis_db}"
    redis.Redis.from_url(redis_url).flushdb()
    home = tmp_path_factory.mktemp("afdist")
    env = dict(os.environ, DATABASE_URL=db_url, REDIS_URL=redis_url, AGENTFLOW_HOME=str(home),
               AGENTFLOW_VISIBILITY_TIMEOUT="8", AGENTFLOW_SCHEDULE_TICK="0.5", PYTHONUNBUFFERED="1")
    from agentflow.store.db import migrate

    migrate(db_url)
    yield env
    from agentflow.store.db import get_engine

    get_engine(db_url).dispose()
    with psycopg.connect(base, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
    redis.Redis.from_url(redis_url).flushdb()


class Workers:
    """Starts and stops `agentflow worker` processes; logs go to files for post-mortems."""

    def __init__(self, env: dict, logdir):
        self.env, self.logdir, self.procs = env, logdir, {}

    def start(self, name: str, queues: str, concurrency: int = 2, extra_env: dict | None = None):
        log = open(self.logdir / f"{name}.log", "ab")
        env = dict(self.env, **(extra_env or {}))
        proc = subprocess.Popen([sys.executable, "-m", "agentflow.cli", "worker", "--queues", queues,
                                 "--concurrency", str(concurrency), "--hostname", f"{name}@%h",
                                 "--log-level", "info"],
                                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs[name] = proc
        return proc

    def wait_ready(self, names, timeout: float = 60):
        from celery import Celery

        app = Celery(broker=self.env["REDIS_URL"])
        deadline = time.time() + timeout
        want = set(names)
        while time.time() < deadline:
            replies = app.control.ping(timeout=0.5) or []
            seen = {n.split("@")[0] for r in replies for n in r}
            if want <= seen:
                return
            for n in want:
                if self.procs[n].poll() is not None:
                    raise RuntimeError(f"worker {n} exited: {self.log(n)[-3000:]}")
        raise TimeoutError(f"workers {want} not ready; log: {[self.log(n)[-1500:] for n in want]}")

    def kill(self, name: str, sig=signal.SIGKILL):
        proc = self.procs[name]
        try:
            os.killpg(proc.pid, sig)  # the main process and its pool children
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)

    def log(self, name: str) -> str:
        return (self.logdir / f"{name}.log").read_text(errors="replace")

    def stop_all(self):
        for name, proc in list(self.procs.items()):
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    continue
        for proc in self.procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def workers(dist_env, tmp_path_factory):
    w = Workers(dist_env, tmp_path_factory.mktemp("workerlogs"))
    yield w
    w.stop_all()
