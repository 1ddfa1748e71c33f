"""Pytest fixtures for real servers and databases (a plugin: `pytest_plugins = ["tests.fixtures_servers"]`).

- `openai_server`: a fresh OpenAIServer per test.
- `http_api`: a fresh HTTPAPIServer per test.
- `pg_dsn`: a DSN whose search_path is a fresh, empty schema in database `test`, dropped
  afterwards (fails the test when PostgreSQL is unreachable, tests/needs.py). Base URL from
  `AGENTFLOW_TEST_PG_URL`, else postgres@ / root@ 127.0.0.1:5432/test.
- `shop_db_pg` / `sqlite_shop`: the same `orders(id, customer, item, status)` table with
  SHOP_ROWS, in a fresh Postgres schema / a temp SQLite file; each returns a DSN.
- `reset_resilience`: forgets circuit breakers before and after a test (and every test
  forgets them afterwards anyway, through an autouse fixture).
"""

from __future__ import annotations

import sqlite3
import uuid

import pytest

from tests.needs import need_postgres
from tests.servers.http_api import HTTPAPIServer
from tests.servers.openai_server import OpenAIServer

SHOP_ROWS = [
    ("alice", "keyboard", "shipped"),
    ("alice", "mouse", "processing"),
    ("bob", "monitor", "delivered"),
    ("carol", "desk", "shipped"),
]


@pytest.fixture
def openai_server():
    with OpenAIServer() as server:
        yield server


@pytest.fixture
def http_api():
    with HTTPAPIServer() as server:
        yield server


@pytest.fixture
def reset_resilience():
    from agentflow.graph import resilience

    resilience.reset_breakers()
    yield resilience
    resilience.reset_breakers()


@pytest.fixture(autouse=True)
def _fresh_circuit_breakers():
    """Breakers are process-global, keyed by source id ("gpt"): a test that trips one
    must not make a later test fail with CircuitOpenError."""
    yield
    from agentflow.graph import resilience

    resilience.reset_breakers()


# ---------------------------------------------------------------- PostgreSQL


def _pg_admin():
    import psycopg

    url = need_postgres()
    return psycopg.connect(url, autocommit=True), url


@pytest.fixture
def pg_dsn():
    from agentflow.graph.sources.sql import dispose_engine

    admin, url = _pg_admin()
    schema = "t_" + uuid.uuid4().hex[:12]
    with admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
        dsn = f"{url}?options=-csearch_path%3D{schema}"
        try:
            yield dsn
        finally:
            dispose_engine(dsn)  # pooled connections would outlive the schema
            admin.execute("SET lock_timeout = '10s'")
            admin.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture
def shop_db_pg(pg_dsn):
    import psycopg

    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE orders (id serial PRIMARY KEY, customer text, item text, status text)")
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO orders (customer, item, status) VALUES (%s, %s, %s)", SHOP_ROWS)
    return pg_dsn


# ---------------------------------------------------------------- SQLite


@pytest.fixture
def sqlite_shop(tmp_path):
    from agentflow.graph.sources.sql import dispose_engine

    path = tmp_path / "shop.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY AUTOINCREMENT, customer TEXT, item TEXT, "
                 "status TEXT)")
    conn.executemany("INSERT INTO orders (customer, item, status) VALUES (?, ?, ?)", SHOP_ROWS)
    conn.commit()
    conn.close()
    dsn = f"sqlite:///{path}"
    yield dsn
    dispose_engine(dsn)


# ---------------------------------------------------------------- spec helper


def make_spec(nodes: list[dict], sources: list[dict] | None = None, **extra):
    """A WorkflowSpec around some nodes (graph checks are validate.py's business)."""
    from agentflow.graph.spec import WorkflowSpec

    return WorkflowSpec.model_validate({"id": "t", "name": "test", "start_node": nodes[0]["id"],
                                        "nodes": nodes, "sources": sources or [], **extra})


def node_of(spec, node_id: str | None = None):
    """make_node for one node of `spec` (the first by default)."""
    from agentflow.graph.nodes import make_node

    return make_node(spec.node(node_id or spec.nodes[0].id), spec)
