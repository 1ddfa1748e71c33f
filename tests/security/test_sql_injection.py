"""SQL injection strings in user input, through the API, reach the database only as
bound parameters: the statement text sent to the driver never contains them, the rows
that come back are the ones a literal match gives, and nothing is written. The API's own
queries (search, ids, cursors) are parameterized too."""

from __future__ import annotations

import sqlite3
from urllib.parse import quote

import pytest
from sqlalchemy import event

from agentflow.graph.sources import sql

INJECTIONS = [
    "alice' OR '1'='1",
    "x'; DROP TABLE orders; --",
    "'); DELETE FROM orders; --",
    "\\' OR 1=1 --",
    "alice\" OR \"1\"=\"1",
    "1 UNION SELECT name, sql, type FROM sqlite_master --",
    "'; ATTACH DATABASE '/tmp/pwned.db' AS p; --",
    "%' OR customer LIKE '%",
]


@pytest.fixture(params=["sqlite", "postgresql"])
def shop(request):
    if request.param == "postgresql":
        return "postgresql", request.getfixturevalue("shop_db_pg")
    return "sqlite", request.getfixturevalue("sqlite_shop")


@pytest.fixture
def statements(shop):
    """(statement, parameters) of every query the db node's engine sends."""
    _, dsn = shop
    engine = sql.get_engine(dsn)
    seen: list[tuple[str, object]] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", record)
    yield seen
    event.remove(engine, "before_cursor_execute", record)
    sql.dispose_engine(dsn)


def count_orders(driver: str, dsn: str) -> int:
    if driver == "sqlite":
        with sqlite3.connect(dsn.removeprefix("sqlite:///")) as conn:
            return conn.execute("SELECT count(*) FROM orders").fetchone()[0]
    import psycopg

    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT count(*) FROM orders").fetchone()[0]


def db_spec(driver: str) -> dict:
    return {"id": "orders", "name": "orders", "start_node": "input",
            "nodes": [{"id": "input", "type": "input"},
                      {"id": "lookup", "type": "db", "source": "shop",
                       "config": {"query": "SELECT id, item, status FROM orders WHERE customer = :customer ORDER BY id",
                                  "params": {"customer": "{metadata.customer}"}, "output_key": "db_result"}},
                      {"id": "echo", "type": "db", "source": "shop",
                       "config": {"query": "SELECT :text AS echoed, '{user_input}' AS template",
                                  "params": {"text": "{user_input}"}, "output_key": "api_result"}}],
            "edges": [{"from": "input", "to": "lookup"}, {"from": "lookup", "to": "echo"}],
            "sources": [{"id": "shop", "kind": "db", "driver": driver, "dsn_env": "SHOP_DSN"}]}


@pytest.fixture
def api(make_api, shop, monkeypatch):
    driver, dsn = shop
    monkeypatch.setenv("SHOP_DSN", dsn)
    api = make_api(AGENTFLOW_RATE_TENANT_PER_MINUTE="0", AGENTFLOW_RATE_IP_PER_MINUTE="0")
    assert api.call("POST", "/workflows", json=db_spec(driver)).status_code == 201
    return api


def test_injection_strings_travel_only_as_parameters(api, shop, statements):
    driver, dsn = shop
    before = count_orders(driver, dsn)
    for evil in INJECTIONS:
        statements.clear()
        run = api.call("POST", "/workflows/orders/runs", json={"input": {"user_input": evil,
                                                                         "metadata": {"customer": evil}}})
        record = api.wait_run(run.json()["run_id"])
        assert record["status"] == "succeeded", record
        state = record["state"]
        assert state["db_result"] == [], (evil, state["db_result"])         # no row matches the literal text
        assert state["api_result"] == [{"echoed": evil, "template": "{user_input}"}]  # SQL text is never templated
        sent = [s for s, _ in statements if "orders" in s or "echoed" in s]
        assert len(sent) == 2, statements
        for statement, parameters in statements:
            assert evil not in statement, statement
        assert any(evil in str(p) for _, p in statements)  # it went, as a parameter
    assert count_orders(driver, dsn) == before
    # a real customer still matches
    run = api.call("POST", "/workflows/orders/runs", json={"input": {"user_input": "x", "metadata": {"customer": "alice"}}})
    assert len(api.wait_run(run.json()["run_id"])["state"]["db_result"]) == 2


@pytest.mark.parametrize("query", [
    "DELETE FROM orders", "UPDATE orders SET status = 'x'", "DROP TABLE orders",
    "INSERT INTO orders (customer, item, status) VALUES ('m', 'm', 'm')", "SELECT 1; DELETE FROM orders"])
def test_a_spec_that_writes_is_refused_before_it_runs(api, shop, query):
    driver, dsn = shop
    spec = db_spec(driver)
    spec["nodes"][1]["config"] = {"query": query, "params": {}, "output_key": "db_result"}
    response = api.call("POST", "/workflows/execute", json={"spec": spec, "initial_state": {"user_input": "x"}})
    assert response.status_code == 422, response.text
    assert "read-only" in response.text or "exactly one statement" in response.text, response.text
    assert count_orders(driver, dsn) == 4


@pytest.mark.parametrize("query", [
    "WITH gone AS (DELETE FROM orders RETURNING id) SELECT id FROM gone",
    "PRAGMA query_only = OFF", "ATTACH DATABASE '/tmp/af-pwned.db' AS p",
    "SELECT 1; DELETE FROM orders", "COMMIT; DELETE FROM orders"])
def test_the_database_itself_refuses_writes_the_validator_would_stop(shop, query):
    """Defence in depth: below the validator, the connection is read-only."""
    from agentflow.graph.errors import StepError

    driver, dsn = shop
    try:
        sql.run_readonly("shop", dsn, query, {}, max_rows=10, timeout_ms=2000)
    except StepError:
        pass
    assert count_orders(driver, dsn) == 4


@pytest.mark.parametrize("driver", ["sqlite"])
def test_the_apis_own_queries_are_parameterized(make_api, driver):
    api = make_api(AGENTFLOW_RATE_TENANT_PER_MINUTE="0", AGENTFLOW_RATE_IP_PER_MINUTE="0")
    from tests.helpers import rules_spec

    assert api.call("POST", "/workflows", json=rules_spec(id="mine", name="Mine")).status_code == 201
    assert api.call("POST", "/workflows", "other", json=rules_spec(id="theirs", name="Theirs")).status_code == 201
    for evil in INJECTIONS:
        listed = api.call("GET", f"/workflows?q={quote(evil)}")
        assert listed.status_code == 200 and listed.json()["items"] == [], evil
        assert api.call("GET", f"/workflows/{quote(evil, safe='')}").status_code == 404
        assert api.call("GET", f"/runs?workflow_id={quote(evil)}").json()["items"] == []
        assert api.call("GET", f"/audit?action={quote(evil)}").json()["items"] == []
    # '%' and '_' are matched literally by the search, not as wildcards
    assert api.call("GET", "/workflows?q=%25").json()["items"] == []
    assert [w["id"] for w in api.call("GET", "/workflows").json()["items"]] == ["mine"]
    assert [w["id"] for w in api.call("GET", "/workflows", "other").json()["items"]] == ["theirs"]
