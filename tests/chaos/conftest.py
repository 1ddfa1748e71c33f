"""Chaos fixtures: a fresh PostgreSQL database per session (Redis is private: see harness.py)."""

from __future__ import annotations

import uuid
from contextlib import contextmanager
from typing import Iterator

import pytest

from tests.needs import need_postgres, need_redis_server


@contextmanager
def fresh_database() -> Iterator[str]:
    """A new, migrated database on the local PostgreSQL; dropped afterwards."""
    import psycopg

    base = need_postgres()
    name = "af_chaos_" + uuid.uuid4().hex[:8]
    with psycopg.connect(base, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = base.rsplit("/", 1)[0] + "/" + name
    from agentflow.store.db import get_engine, migrate

    try:
        migrate(url)
        yield url
    finally:
        get_engine(url).dispose()
        with psycopg.connect(base, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def chaos_db() -> Iterator[str]:
    need_redis_server()
    with fresh_database() as url:
        yield url
