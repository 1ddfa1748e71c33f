"""The driver's checkpointer holds a tracked run's checkpoints until a remote step finished;
what LangGraph reads back is what the stock saver gives, and an untracked thread is saved
as by the stock saver."""

from __future__ import annotations

import operator
import uuid
from typing import Annotated, TypedDict

import pytest

from tests.needs import need_postgres


@pytest.fixture(scope="module")
def pool():
    need_postgres()
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


class State(TypedDict):
    trail: Annotated[list, operator.add]


def test_an_untracked_graph_resumes_like_with_the_stock_saver(pool):
    """Two graphs, one per saver, interrupted before their last node: the state each
    resumes from is the same."""
    from langgraph.checkpoint.postgres import PostgresSaver
    from langgraph.graph import END, START, StateGraph

    from agentflow.workers.checkpoints import HoldingPostgresSaver

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
    for saver in (PostgresSaver(pool), HoldingPostgresSaver(pool)):
        graph = build(saver)
        config = {"configurable": {"thread_id": str(uuid.uuid4())}}
        graph.invoke({"trail": ["start"]}, config)
        resumed = build(PostgresSaver(pool))  # a new driver, reading only what was stored
        assert resumed.get_state(config).next == ("c",)
        trails.append(resumed.invoke(None, config)["trail"])
    assert trails[0] == trails[1] == ["start", "a", "b", "c"]


def test_a_tracked_run_stores_a_checkpoint_only_after_a_remote_step(pool):
    """The driver's mode: checkpoints are held until a superstep whose remote node finished.
    A driver that dies after the last local node resumes right after the last remote one,
    with every value it had, and recomputes only the local nodes since."""
    from langgraph.checkpoint.postgres import PostgresSaver
    from langgraph.graph import END, START, StateGraph

    from agentflow.workers.checkpoints import HoldingPostgresSaver

    saver, stock = HoldingPostgresSaver(pool), PostgresSaver(pool)
    thread = str(uuid.uuid4())
    config = {"configurable": {"thread_id": thread}}
    calls: list[str] = []
    die = {"at_d": False}

    def local(name):
        def run(state):
            calls.append(name)
            if name == "d" and die["at_d"]:
                die["at_d"] = False  # the first time only
                raise RuntimeError("driver died")
            return {"trail": [name]}
        return run

    def remote(name):
        def run(state, config):
            calls.append(name)
            # what NodeDispatcher reports when a queued step is back
            saver.remote_done(config["configurable"]["thread_id"], config["metadata"]["langgraph_step"])
            return {"trail": [name]}
        return run

    def build(checkpointer):
        g = StateGraph(State)
        for name, fn in (("a", local("a")), ("b", remote("b")), ("c", local("c")), ("d", local("d"))):
            g.add_node(name, fn)
        g.add_edge(START, "a")
        g.add_edge("a", "b")
        g.add_edge("b", "c")
        g.add_edge("c", "d")
        g.add_edge("d", END)
        return g.compile(checkpointer=checkpointer)

    # a fresh tracked run does not read the database: what is stored under its id is not seen
    other = str(uuid.uuid4())
    build(stock).invoke({"trail": ["elsewhere"]}, {"configurable": {"thread_id": other}})
    saver.track(other, fresh=True)
    assert saver.get_tuple({"configurable": {"thread_id": other}}) is None
    saver.discard(other)
    assert saver.get_tuple({"configurable": {"thread_id": other}}) is not None
    calls.clear()

    saver.track(thread, fresh=True)
    die["at_d"] = True
    with pytest.raises(RuntimeError, match="driver died"):
        build(saver).invoke({"trail": ["start"]}, config)
    saver.discard(thread)

    stored = stock.get_tuple(config)
    assert stored.checkpoint["channel_values"]["trail"] == ["start", "a", "b"]  # written after b only
    history = list(stock.list(config))
    assert len(history) == 1  # the input, a's and c's checkpoints were never written

    resumed = build(PostgresSaver(pool))  # a new driver, reading only what was stored
    assert resumed.get_state(config).next == ("c",)
    assert resumed.invoke(None, config)["trail"] == ["start", "a", "b", "c", "d"]
    assert calls == ["a", "b", "c", "d", "c", "d"]  # b, the remote node, ran once


def test_a_tracked_run_reads_back_what_it_holds(pool):
    from langgraph.checkpoint.base import empty_checkpoint

    from agentflow.workers.checkpoints import HoldingPostgresSaver

    saver = HoldingPostgresSaver(pool)
    thread = str(uuid.uuid4())
    base = {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}
    saver.track(thread, fresh=True)
    first = empty_checkpoint()
    first["channel_values"], first["channel_versions"] = {"n": 1, "m": "x"}, {"n": 1, "m": 1}
    cfg = saver.put(base, first, {"step": 0}, {"n": 1, "m": 1})
    second = empty_checkpoint()
    second["channel_values"], second["channel_versions"] = {"n": 2, "m": "x"}, {"n": 2, "m": 1}
    saver.put(cfg, second, {"step": 1}, {"n": 2})  # m changed only in the held first one
    got = saver.get_tuple(base)  # writes what is held, with m's blob, then reads it
    assert got.checkpoint["id"] == second["id"] and got.checkpoint["channel_values"] == {"n": 2, "m": "x"}
    assert got.parent_config is None  # the held first one was never written: no parent
    saver.discard(thread)
