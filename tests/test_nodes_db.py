"""db node against real PostgreSQL and SQLite: bound parameters only, read-only at the
database level, statement timeout, max_rows, JSON-safe rows, secrets kept out."""

from __future__ import annotations

import sqlite3
import time

import psycopg
import pytest

from agentflow.graph.errors import ProviderError, StepError
from agentflow.graph.runtime import RunContext
from agentflow.graph.state import initial_state
from tests.fixtures_servers import make_spec, node_of

pytestmark = pytest.mark.usefixtures("reset_resilience")

ORDERS_QUERY = "SELECT id, item, status FROM orders WHERE customer = :customer ORDER BY id"
INJECTIONS = ["alice' OR '1'='1", "x'; DROP TABLE orders; --", "'); DELETE FROM orders; --", "\\' OR 1=1 --"]


def db_impl(query: str = ORDERS_QUERY, params=None, driver: str = "postgresql", source_extra=None, **config):
    if params is None:
        params = {"customer": "{metadata.customer}"}
    node = {"id": "orders", "type": "db", "source": "shop", "config": {"query": query, "params": params, **config}}
    source = {"id": "shop", "kind": "db", "driver": driver, "dsn_env": "SHOP_DSN", **(source_extra or {})}
    return node_of(make_spec([node], [source]))


@pytest.fixture(params=["postgresql", "sqlite"])
def shop(request):
    """(driver, dsn) for each database, with the same orders table."""
    if request.param == "postgresql":
        return "postgresql", request.getfixturevalue("shop_db_pg")
    return "sqlite", request.getfixturevalue("sqlite_shop")


def ctx_for(dsn: str) -> RunContext:
    return RunContext(env={"SHOP_DSN": dsn})


def count_orders(driver: str, dsn: str) -> int:
    if driver == "sqlite":
        with sqlite3.connect(dsn.removeprefix("sqlite:///")) as conn:
            return conn.execute("SELECT count(*) FROM orders").fetchone()[0]
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT count(*) FROM orders").fetchone()[0]


def test_select_with_params_from_metadata(shop):
    driver, dsn = shop
    impl = db_impl(driver=driver)
    assert impl.calls_outside and impl.estimate_tokens({}) == 0
    update = impl(initial_state("x", {"customer": "alice"}), ctx_for(dsn))
    assert update == {"db_result": [{"id": 1, "item": "keyboard", "status": "shipped"},
                                    {"id": 2, "item": "mouse", "status": "processing"}]}


@pytest.mark.parametrize("evil", INJECTIONS)
def test_injection_strings_are_only_parameters(shop, evil):
    driver, dsn = shop
    ctx = ctx_for(dsn)
    assert db_impl(driver=driver)(initial_state("x", {"customer": evil}), ctx) == {"db_result": []}
    echoed = db_impl("SELECT :v AS v", {"v": "{metadata.customer}"}, driver=driver)(
        initial_state("x", {"customer": evil}), ctx)
    assert echoed == {"db_result": [{"v": evil}]}  # came back literally
    assert count_orders(driver, dsn) == 4  # table still there, untouched


def test_typed_parameter_keeps_its_type(shop):
    driver, dsn = shop
    impl = db_impl("SELECT item FROM orders WHERE id > :min_id ORDER BY id", {"min_id": "{metadata.min_id}"},
                   driver=driver)
    update = impl(initial_state("x", {"min_id": 2}), ctx_for(dsn))
    assert [r["item"] for r in update["db_result"]] == ["monitor", "desk"]


def test_max_rows_caps_and_records_truncation(shop):
    driver, dsn = shop
    impl = db_impl("SELECT id FROM orders ORDER BY id", {}, driver=driver, max_rows=2)
    update = impl(initial_state("x"), ctx_for(dsn))
    assert update["db_result"] == [{"id": 1}, {"id": 2}]
    assert update["metadata"] == {"orders_truncated": True}
    exact = db_impl("SELECT id FROM orders", {}, driver=driver, max_rows=4)(initial_state("x"), ctx_for(dsn))
    assert len(exact["db_result"]) == 4 and "metadata" not in exact


@pytest.mark.parametrize("query", [
    "INSERT INTO orders (customer, item, status) VALUES ('mallory', 'x', 'y')",
    "DELETE FROM orders",
    "UPDATE orders SET status = 'lost'",
    "DROP TABLE orders",
])
def test_writes_are_refused_by_the_database(shop, query):
    driver, dsn = shop
    # Built straight from a spec, skipping any validator that would reject the SQL.
    with pytest.raises(StepError) as info:
        db_impl(query, {}, driver=driver)(initial_state("x"), ctx_for(dsn))
    assert "database source 'shop' refused" in str(info.value)
    assert "db nodes run read-only queries" in str(info.value)
    assert not info.value.retryable
    assert count_orders(driver, dsn) == 4


@pytest.mark.postgres
@pytest.mark.parametrize("query", [
    "SELECT nextval('orders_id_seq')",  # a SELECT calling a writing function
    "WITH gone AS (DELETE FROM orders RETURNING id) SELECT count(*) FROM gone",
    "SELECT set_config('transaction_read_only', 'off', true)",
    "SELECT 1 FROM orders FOR UPDATE",
])
def test_sneaky_writes_refused_on_postgres(shop_db_pg, query):
    with pytest.raises(StepError):
        db_impl(query, {})(initial_state("x"), ctx_for(shop_db_pg))
    assert count_orders("postgresql", shop_db_pg) == 4


@pytest.mark.postgres
@pytest.mark.parametrize("query", [
    # Ending our read-only transaction from inside the query text: psycopg would send a
    # parameterless query with the simple protocol, which runs several statements.
    "COMMIT; DELETE FROM orders",
    "END; DELETE FROM orders",
    "ROLLBACK; BEGIN READ WRITE; DELETE FROM orders; COMMIT",
    "SELECT 1; DELETE FROM orders",
])
def test_postgres_runs_exactly_one_statement(shop_db_pg, query):
    with pytest.raises(StepError, match="db nodes run exactly one SQL statement"):
        db_impl(query, {})(initial_state("x"), ctx_for(shop_db_pg))
    assert count_orders("postgresql", shop_db_pg) == 4


@pytest.mark.parametrize("query", [
    "ATTACH DATABASE '{tmp}/other.db' AS other",  # would read (or create) any file
    "VACUUM INTO '{tmp}/copy.db'",
    "PRAGMA query_only = OFF",
    "PRAGMA journal_mode = DELETE",
    "SELECT load_extension('/tmp/x')",
])
def test_sqlite_allows_reading_only(sqlite_shop, tmp_path, query):
    with pytest.raises(StepError, match="refused the query: db nodes run read-only queries"):
        db_impl(query.format(tmp=tmp_path), {}, driver="sqlite")(initial_state("x"), ctx_for(sqlite_shop))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shop.db"]  # no file created
    info = db_impl("PRAGMA table_info(orders)", {}, driver="sqlite")(initial_state("x"), ctx_for(sqlite_shop))
    assert [c["name"] for c in info["db_result"]] == ["id", "customer", "item", "status"]


def test_sqlite_refuses_several_statements(sqlite_shop):
    with pytest.raises(StepError, match="db nodes run exactly one SQL statement"):
        db_impl("SELECT 1; DELETE FROM orders", {}, driver="sqlite")(initial_state("x"), ctx_for(sqlite_shop))
    assert count_orders("sqlite", sqlite_shop) == 4


@pytest.mark.postgres
def test_postgres_statement_timeout(shop_db_pg):
    impl = db_impl("SELECT pg_sleep(5)", {}, source_extra={"statement_timeout_ms": 200})
    started = time.monotonic()
    with pytest.raises(ProviderError) as info:
        impl(initial_state("x"), ctx_for(shop_db_pg))
    assert time.monotonic() - started < 2
    assert str(info.value) == ("query on database source 'shop' was cancelled: it ran longer than the "
                               "statement timeout of 200 ms")
    # the pooled connection is usable afterwards, and the node's own timeout wins over the source's
    impl = db_impl("SELECT pg_sleep(0.3) IS NULL AS slept", {}, source_extra={"statement_timeout_ms": 100},
                   timeout_seconds=2)
    assert impl(initial_state("x"), ctx_for(shop_db_pg)) == {"db_result": [{"slept": False}]}


def test_sqlite_statement_timeout(sqlite_shop):
    forever = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"
    impl = db_impl(forever, {}, driver="sqlite", source_extra={"statement_timeout_ms": 200})
    started = time.monotonic()
    with pytest.raises(ProviderError, match="statement timeout of 200 ms"):
        impl(initial_state("x"), ctx_for(sqlite_shop))
    assert time.monotonic() - started < 2
    assert db_impl(driver="sqlite")(initial_state("x", {"customer": "bob"}), ctx_for(sqlite_shop))["db_result"]


@pytest.mark.postgres
def test_postgres_values_are_json_safe(pg_dsn):
    query = ("SELECT DATE '2024-05-06' AS d, TIMESTAMP '2024-05-06 07:08:09' AS ts, 1.25::numeric AS n, "
             "'{\"a\": [1, 2]}'::jsonb AS j, ARRAY[1, 2] AS arr, NULL AS nothing, "
             "'00000000-0000-0000-0000-000000000001'::uuid AS u")
    rows = db_impl(query, {})(initial_state("x"), ctx_for(pg_dsn))["db_result"]
    assert rows == [{"d": "2024-05-06", "ts": "2024-05-06T07:08:09", "n": 1.25, "j": {"a": [1, 2]},
                     "arr": [1, 2], "nothing": None, "u": "00000000-0000-0000-0000-000000000001"}]


@pytest.mark.postgres
def test_plain_postgresql_dsn_is_accepted(shop_db_pg):
    assert shop_db_pg.startswith("postgresql://")  # rewritten to postgresql+psycopg:// inside
    update = db_impl()(initial_state("x", {"customer": "carol"}), ctx_for(shop_db_pg))
    assert update["db_result"][0]["item"] == "desk"


def test_bad_query_and_missing_parameter_are_readable(sqlite_shop):
    with pytest.raises(StepError, match="query on database source 'shop' failed: no such table: nope"):
        db_impl("SELECT * FROM nope", {}, driver="sqlite")(initial_state("x"), ctx_for(sqlite_shop))
    with pytest.raises(StepError, match="customer"):
        db_impl(params={}, driver="sqlite")(initial_state("x"), ctx_for(sqlite_shop))


def test_missing_dsn_variable():
    with pytest.raises(StepError, match="needs the environment variable SHOP_DSN, which is not set"):
        db_impl()(initial_state("x", {"customer": "a"}), RunContext(env={}))


@pytest.mark.postgres
def test_dsn_password_never_shown(shop_db_pg, monkeypatch):
    from agentflow.graph import resilience

    monkeypatch.setattr(resilience, "sleep", lambda s: None)
    dsn = "postgresql://postgres:pw-canary-987654@127.0.0.1:1/test"
    with pytest.raises(ProviderError) as info:
        db_impl(max_retries=1)(initial_state("x", {"customer": "a"}), ctx_for(dsn))
    assert "could not use database source 'shop'" in str(info.value)
    assert "(after 2 attempts)" in str(info.value) and "pw-canary-987654" not in str(info.value)
