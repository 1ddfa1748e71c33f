"""Chaos fixtures: a fresh PostgreSQL database per session (Redis is private: see harness.py)."""

from __future__ import annotations

import shutil
import uuid
from contextlib import contextmanager
from typing import Iterator

import pytest

from tests.fixtures_servers import pg_base_url


@contextmanager
def fresh_database() -> Iterator[str]:
    """A new, migrated database on the local PostgreSQL; dropped afterwards."""
    import psycopg

    base = pg_base_url()
    if base is None:
        pytest.skip("PostgreSQL is not reachable at 127.0.0.1:5432; chaos tests need it")
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
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed; the chaos tests start a private one")
    with fresh_database() as url:
        yield url
