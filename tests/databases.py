"""Fresh PostgreSQL databases for tests, on the local server (tests/needs.py): each test
environment gets a database of its own, named by its prefix, and drops it afterwards."""

from __future__ import annotations

import uuid
from contextlib import contextmanager
from typing import Iterator

from tests.needs import need_postgres


def create_database(prefix: str = "af_test_", why: str = "") -> str:
    """The URL of a new, empty database named `prefix` + random hex (`why`: said when
    PostgreSQL is missing)."""
    import psycopg

    base = need_postgres(why)
    name = prefix + uuid.uuid4().hex[:10]
    with psycopg.connect(base, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    return base.rsplit("/", 1)[0] + "/" + name


def drop_database(url: str) -> None:
    """Drop the database of `url` (made by `create_database`), its open connections too."""
    import psycopg

    name = url.rsplit("/", 1)[1]
    with psycopg.connect(need_postgres(), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def fresh_database(prefix: str = "af_test_", why: str = "") -> Iterator[str]:
    """A new, migrated database, dropped afterwards; yields its URL."""
    url = create_database(prefix, why)
    from agentflow.store.db import get_engine, migrate

    try:
        migrate(url)
        yield url
    finally:
        get_engine(url).dispose()
        drop_database(url)
