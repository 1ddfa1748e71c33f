"""sources/sql.py helpers: DSN rewriting, JSON-safe values, engine cache."""

from __future__ import annotations

import datetime as dt
import decimal
import uuid

from agentflow.graph.sources import sql


def test_normalize_dsn():
    assert sql.normalize_dsn("postgresql://u:p@h/db") == "postgresql+psycopg://u:p@h/db"
    assert sql.normalize_dsn("postgres://h/db") == "postgresql+psycopg://h/db"
    assert sql.normalize_dsn("postgresql+psycopg://h/db") == "postgresql+psycopg://h/db"
    assert sql.normalize_dsn("sqlite:///x.db") == "sqlite:///x.db"


def test_json_safe():
    value = {"d": dt.date(2024, 1, 2), "ts": dt.datetime(2024, 1, 2, 3, 4, 5), "n": decimal.Decimal("1.25"),
             "u": uuid.UUID(int=1), "b": b"\x00\x01", "l": (1, dt.time(1, 2)), "td": dt.timedelta(seconds=90),
             "nan": float("nan"), 3: None}
    assert sql.json_safe(value) == {
        "d": "2024-01-02", "ts": "2024-01-02T03:04:05", "n": 1.25, "u": str(uuid.UUID(int=1)),
        "b": "AAE=", "l": [1, "01:02:00"], "td": 90.0, "nan": None, "3": None}


def test_engines_are_cached_per_dsn(sqlite_shop):
    a = sql.get_engine(sqlite_shop)
    assert sql.get_engine(sqlite_shop) is a
    sql.dispose_engine(sqlite_shop)
    assert sql.get_engine(sqlite_shop) is not a


def test_run_readonly_returns_rows_and_truncation(sqlite_shop):
    rows, truncated = sql.run_readonly("shop", sqlite_shop, "SELECT item FROM orders ORDER BY id", {},
                                       max_rows=3, timeout_ms=1000)
    assert [r["item"] for r in rows] == ["keyboard", "mouse", "monitor"] and truncated
    rows, truncated = sql.run_readonly("shop", sqlite_shop, "SELECT item FROM orders", {},
                                       max_rows=10, timeout_ms=1000)
    assert len(rows) == 4 and not truncated
