"""Distributed-mode fixtures: a fresh Postgres database, a Redis db, real Celery workers.

Workers are real `agentflow worker` processes (prefork pools), one group per queue, as
`make up` starts them. Each test module gets its own database and Redis db number.
"""

from __future__ import annotations

import contextlib
import os
import uuid

import pytest

from agentflow.workers.launch import WorkerProcesses as Workers  # one launcher for tests and benches
from tests.needs import need_postgres, need_redis

REDIS_HOST = "127.0.0.1"


@pytest.fixture(scope="module")
def dist_env(tmp_path_factory):
    """Environment for API and workers: fresh database + Redis db, short visibility timeout."""
    base = need_postgres("distributed tests need it")
    need_redis(f"redis://{REDIS_HOST}:6379/0")
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


@pytest.fixture(scope="module")
def workers(dist_env, tmp_path_factory):
    w = Workers(dist_env, tmp_path_factory.mktemp("workerlogs"))
    yield w
    w.stop_all()


@contextlib.contextmanager
def api_client(dist_env: dict, monkeypatch, names=()):
    """An in-process API in distributed mode on this module's database and broker (auth off),
    with `names` copied from `dist_env` into the environment too."""
    from fastapi.testclient import TestClient

    from agentflow.api.main import create_app
    from agentflow.settings import Settings, get_settings
    from agentflow.workers import app as worker_app, dispatch

    for key in ("DATABASE_URL", "REDIS_URL", "AGENTFLOW_HOME", *names):
        monkeypatch.setenv(key, dist_env[key])
    monkeypatch.setenv("AGENTFLOW_AUTH", "off")
    monkeypatch.setenv("AGENTFLOW_LOAD_EXAMPLES", "0")
    # no abuse limits: this process's limiter remembers queues of earlier modules' Redis dbs,
    # and would start them cold here (a 429 for the first request); tests/security covers them
    monkeypatch.setenv("AGENTFLOW_RATE_TENANT_PER_MINUTE", "0")
    monkeypatch.setenv("AGENTFLOW_RATE_IP_PER_MINUTE", "0")
    # The process-wide Celery app reads REDIS_URL when first imported, maybe by an earlier
    # test module with another Redis db: send this module's tasks to its own broker.
    celery = worker_app.make_celery(dist_env["REDIS_URL"])
    monkeypatch.setattr(worker_app, "celery_app", celery)
    monkeypatch.setattr(dispatch, "celery_app", celery)
    get_settings.cache_clear()
    try:
        with TestClient(create_app(Settings())) as client:
            yield client
    finally:
        get_settings.cache_clear()
