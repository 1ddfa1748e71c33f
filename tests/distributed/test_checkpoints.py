"""The driver's checkpointer holds a task's writes until the next checkpoint of its run and
writes both in one pipeline; what LangGraph reads back is what the stock saver gives."""

from __future__ import annotations

import operator
import uuid
from typing import Annotated, TypedDict

import pytest

from tests.fixtures_servers import pg_base_url


@pytest.fixture(scope="module")
def pool():
    if pg_base_url() is None:
        pytest.skip("PostgreSQL is not reachable")
    from psycopg.rows import dict_row
    from psycopg_pool import ConnectionPool

    from tests.chaos.conftest import fresh_database

    with fresh_database() as url:
        url = url.replace("postgresql+psycopg://", "postgresql://")
        with ConnectionPool(url, min_size=1, max_size=4, kwargs={"autocommit": True, "prepare_threshold": 0,
                                                                 "row_factory": dict_row}) as p:
            from langgraph.checkpoint.postgres import PostgresSaver

            PostgresSaver(p).setup()
            yield p


def _checkpoint(n: int) -> dict:
    from langgraph.checkpoint.base import empty_checkpoint

    c = empty_checkpoint()
    c["channel_values"] = {"n": n}
    return c


def test_writes_wait_for_the_next_checkpoint_and_then_read_back_as_usual(pool):
    from langgraph.checkpoint.postgres import PostgresSaver

    from agentflow.workers.checkpoints import PostgresSaverWithDeferredWrites

    saver, stock = PostgresSaverWithDeferredWrites(pool), PostgresSaver(pool)
    thread = str(uuid.uuid4())
    base = {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}
    first = saver.put(base, _checkpoint(1), {"step": 1}, {})
    saver.put_writes(first, [("n", 2), ("log", "a")], task_id="task-a")
    assert stock.get_tuple(first).pending_writes == []  # held, not yet written
    saver.put(first, _checkpoint(2), {"step": 2}, {})
    assert sorted(w[1:] for w in stock.get_tuple(first).pending_writes) == [("log", "a"), ("n", 2)]

    second = stock.get_tuple({"configurable": {"thread_id": thread, "checkpoint_ns": ""}}).config
    saver.put_writes(second, [("n", 3)], task_id="task-b")
    saver.flush(thread)  # e.g. a run that ends on a task with no checkpoint after it
    assert [w[1:] for w in stock.get_tuple(second).pending_writes] == [("n", 3)]
    saver.put_writes(second, [("n", 4)], task_id="task-c")
    saver.discard(thread)
    saver.flush(thread)
    assert [w[1:] for w in stock.get_tuple(second).pending_writes] == [("n", 3)]
    assert saver._pending == {}


class State(TypedDict):
    trail: Annotated[list, operator.add]


def test_a_graph_checkpointed_this_way_resumes_like_with_the_stock_saver(pool):
    """Two graphs, one per saver, interrupted before their last node: the state each
    resumes from is the same."""
    from langgraph.checkpoint.postgres import PostgresSaver
    from langgraph.graph import END, START, StateGraph

    from agentflow.workers.checkpoints import PostgresSaverWithDeferredWrites

    def node(name):
        return lambda state: {"trail": [name]}

    def build(saver):
        g = StateGraph(State)
        for name in ("a", "b", "c"):
            g.add_node(name, node(name))
        g.add_edge(START, "a")
        g.add_edge("a", "b")
        g.add_edge("b", "c")
        g.add_edge("c", END)
        return g.compile(checkpointer=saver, interrupt_before=["c"])

    trails = []
    for saver in (PostgresSaver(pool), PostgresSaverWithDeferredWrites(pool)):
        graph = build(saver)
        config = {"configurable": {"thread_id": str(uuid.uuid4())}}
        graph.invoke({"trail": ["start"]}, config)
        resumed = build(PostgresSaver(pool))  # a new driver, reading only what was stored
        assert resumed.get_state(config).next == ("c",)
        trails.append(resumed.invoke(None, config)["trail"])
    assert trails[0] == trails[1] == ["start", "a", "b", "c"]
