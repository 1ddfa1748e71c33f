"""tests/databases.py: the one way a test environment gets a Postgres database of its own."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.needs import need_postgres

TESTS = Path(__file__).resolve().parent


def _exists(name: str) -> bool:
    import psycopg

    with psycopg.connect(need_postgres(), autocommit=True) as admin:
        return admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None


def test_a_fresh_database_is_migrated_and_dropped_even_when_the_test_fails():
    import psycopg

    from tests.databases import fresh_database

    with pytest.raises(RuntimeError, match="the test failed"):
        with fresh_database("af_probe_") as url:
            name = url.rsplit("/", 1)[1]
            assert name.startswith("af_probe_") and _exists(name)
            with psycopg.connect(url) as conn:  # migrated: the run store's tables are there
                assert conn.execute("SELECT count(*) FROM runs").fetchone() == (0,)
            raise RuntimeError("the test failed")
    assert not _exists(name)


def test_no_other_test_module_creates_a_database_of_its_own():
    """The distributed, chaos and scale-out environments each made and dropped theirs inline."""
    makers = sorted(str(p.relative_to(TESTS)) for p in TESTS.rglob("*.py")
                    if re.search(r"CREATE DATABASE", p.read_text()) and p.name not in ("databases.py", Path(__file__).name))
    assert makers == [], f"use tests/databases.py (create_database / fresh_database) in {makers}"
