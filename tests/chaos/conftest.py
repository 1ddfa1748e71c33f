"""Chaos fixtures: a fresh PostgreSQL database per test (Redis is private: see harness.py)."""

from __future__ import annotations

from typing import Iterator

import pytest

from tests.databases import fresh_database
from tests.needs import need_redis_server


@pytest.fixture
def chaos_db() -> Iterator[str]:
    need_redis_server()
    with fresh_database("af_chaos_") as url:
        yield url
