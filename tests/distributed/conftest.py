"""Distributed-mode fixtures: a fresh Postgres database, a Redis db, real Celery workers.

Workers are real `agentflow worker` processes (prefork pools), one group per queue, as
`make up` starts them. Each test module gets its own database and Redis db number.
"""

from __future__ import annotations

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
