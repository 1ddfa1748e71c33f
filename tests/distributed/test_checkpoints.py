"""The driver's checkpointer holds a tracked run's checkpoints until the run pauses;
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

    from tests.databases import fresh_database

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


def test_a_tracked_run_writes_one_checkpoint_when_it_pauses(pool):
    """The driver's mode: checkpoints and task writes are held until the run pauses. The
    flush writes the newest checkpoint with the finished tasks and the interrupts of the
    paused superstep, so a new driver resumes there: the parallel local node is not run
    again, the remote one runs once more only to return its result, and a driver that
    died before any pause left nothing behind."""
    from langgraph.checkpoint.postgres import PostgresSaver
    from langgraph.graph import END, START, StateGraph
    from langgraph.types import interrupt

    from agentflow.workers.checkpoints import HoldingPostgresSaver

    saver, stock = HoldingPostgresSaver(pool), PostgresSaver(pool)
    thread = str(uuid.uuid4())
    config = {"configurable": {"thread_id": thread}}
    calls: list[str] = []
    done = {"b": False}

    def local(name):
        def run(state):
            calls.append(name)
            return {"trail": [name]}
        return run

    def remote(state):
        calls.append("b")
        if not done["b"]:
            interrupt({"kind": "step", "node": "b"})  # what NodeDispatcher does until b's step is back
        return {"trail": ["b"]}

    def build(checkpointer):
        g = StateGraph(State)
        g.add_node("a", local("a"))
        g.add_node("b", remote)
        g.add_node("c", local("c"))
        g.add_node("d", local("d"), defer=True)
        g.add_edge(START, "a")
        g.add_edge("a", "b")
        g.add_edge("a", "c")
        g.add_edge("b", "d")
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
    out = build(saver).invoke({"trail": ["start"]}, config)
    assert [i.value for i in out["__interrupt__"]] == [{"kind": "step", "node": "b"}]
    assert stock.get_tuple(config) is None  # nothing is written while the driver advances
    saver.flush(thread, keep=False)

    history = list(stock.list(config))
    assert len(history) == 1  # the input's and a's checkpoints: only the newest is written
    assert history[0].checkpoint["channel_values"]["trail"] == ["start", "a"]
    assert {w[1] for w in history[0].pending_writes} >= {"trail", "__interrupt__"}  # c's result, b's wait

    done["b"] = True
    resumed = build(PostgresSaver(pool))  # a new driver, reading only what was stored
    assert sorted(resumed.invoke(None, config)["trail"]) == sorted(["start", "a", "b", "c", "d"])
    assert calls == ["a", "b", "c", "b", "d"]  # c ran once; b ran again only to return its result


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


def test_a_resumed_driver_reads_its_checkpoint_once(pool, monkeypatch):
    """The driver reads the latest checkpoint to know the run resumes; LangGraph's own first
    read reuses that tuple instead of a second query, and any later read goes to the
    database again (what LangGraph loaded it changes)."""
    from langgraph.checkpoint.postgres import PostgresSaver
    from langgraph.graph import END, START, StateGraph
    from langgraph.types import interrupt

    from agentflow.workers.checkpoints import HoldingPostgresSaver

    thread = str(uuid.uuid4())
    config = {"configurable": {"thread_id": thread}}
    done = {"b": False}

    def remote(state):
        if not done["b"]:
            interrupt({"kind": "step", "node": "b"})
        return {"trail": ["b"]}

    def build(checkpointer):
        g = StateGraph(State)
        g.add_node("a", lambda state: {"trail": ["a"]})
        g.add_node("b", remote)
        g.add_edge(START, "a")
        g.add_edge("a", "b")
        g.add_edge("b", END)
        return g.compile(checkpointer=checkpointer)

    first = HoldingPostgresSaver(pool)
    first.track(thread, fresh=True)
    build(first).invoke({"trail": ["start"]}, config)
    first.flush(thread, keep=False)

    reads = []
    stock_get = PostgresSaver.get_tuple
    monkeypatch.setattr(PostgresSaver, "get_tuple", lambda self, cfg: reads.append(cfg) or stock_get(self, cfg))
    saver = HoldingPostgresSaver(pool)
    loaded = saver.get_tuple(config)  # the driver's own read: is there a checkpoint?
    assert loaded is not None and len(reads) == 1
    saver.track(thread, fresh=False, loaded=loaded)
    done["b"] = True
    assert build(saver).invoke(None, config)["trail"] == ["start", "a", "b"]
    assert len(reads) == 1, "LangGraph's load reused the driver's read"
    saver.flush(thread, keep=True)
    latest = saver.get_tuple(config)  # after the advance: from the database, not the loaded tuple
    assert len(reads) == 2 and latest.checkpoint["id"] != loaded.checkpoint["id"]
    assert latest.checkpoint["channel_values"]["trail"] == ["start", "a", "b"]
    saver.discard(thread)


def test_langgraph_takes_the_loaded_tuple_before_it_puts_anything(pool):
    """The loaded tuple is dropped by the first get_tuple only, not by put/put_writes: that
    holds because LangGraph's loop reads a thread before it writes to it, so no put can come
    while the tuple is held (and make it stale). Pinned here against a LangGraph upgrade."""
    from langgraph.graph import END, START, StateGraph
    from langgraph.types import interrupt

    from agentflow.workers.checkpoints import HoldingPostgresSaver

    calls: list[tuple[str, bool]] = []  # (method, whether the loaded tuple was still held)

    class Recording(HoldingPostgresSaver):
        def _note(self, name, config):
            held = self._tracked.get(config["configurable"]["thread_id"])
            calls.append((name, held is not None and held.loaded is not None))

        def get_tuple(self, config):
            self._note("get_tuple", config)
            return super().get_tuple(config)

        def put(self, config, checkpoint, metadata, new_versions):
            self._note("put", config)
            return super().put(config, checkpoint, metadata, new_versions)

        def put_writes(self, config, writes, task_id, task_path=""):
            self._note("put_writes", config)
            return super().put_writes(config, writes, task_id, task_path)

    thread = str(uuid.uuid4())
    config = {"configurable": {"thread_id": thread}}
    done = {"b": False}

    def remote(state):
        if not done["b"]:
            interrupt({"kind": "step", "node": "b"})
        return {"trail": ["b"]}

    def build(checkpointer):
        g = StateGraph(State)
        g.add_node("a", lambda state: {"trail": ["a"]})
        g.add_node("b", remote)
        g.add_node("c", lambda state: {"trail": ["c"]})
        g.add_edge(START, "a")
        g.add_edge("a", "b")
        g.add_edge("b", "c")
        g.add_edge("c", END)
        return g.compile(checkpointer=checkpointer)

    first = HoldingPostgresSaver(pool)
    first.track(thread, fresh=True)
    build(first).invoke({"trail": ["start"]}, config)
    first.flush(thread, keep=False)

    saver = Recording(pool)
    loaded = saver.get_tuple(config)  # the driver's read
    calls.clear()
    saver.track(thread, fresh=False, loaded=loaded)
    done["b"] = True
    assert build(saver).invoke(None, config)["trail"] == ["start", "a", "b", "c"]
    saver.discard(thread)
    assert calls[0] == ("get_tuple", True), calls  # LangGraph's load took the loaded tuple
    writes = [held for name, held in calls if name in ("put", "put_writes")]
    assert len(writes) >= 3 and not any(writes), calls  # b's and c's writes and checkpoints


def test_a_flush_commits_the_checkpoint_and_its_writes_together_or_nothing(pool, monkeypatch):
    """One transaction: a driver that dies (here: a write that fails) between the checkpoint
    and its task writes leaves the previous state whole, not a checkpoint without the
    interrupts and results that belong to it. (Commits per run: bench/throughput.py.)"""
    from langgraph.checkpoint.postgres import PostgresSaver
    from langgraph.graph import END, START, StateGraph
    from langgraph.types import interrupt

    from agentflow.workers.checkpoints import HoldingPostgresSaver

    def build(checkpointer):
        g = StateGraph(State)
        g.add_node("a", lambda s: {"trail": ["a"]})
        g.add_node("b", lambda s: interrupt({"kind": "step", "node": "b"}) and {"trail": ["b"]})
        g.add_edge(START, "a")
        g.add_edge("a", "b")
        g.add_edge("b", END)
        return g.compile(checkpointer=checkpointer)

    class Killed(Exception):
        pass

    stock_put_writes = PostgresSaver.put_writes

    def dies_writing_tasks(self, config, writes, task_id, task_path=""):
        if getattr(getattr(self, "_flushing", None), "cursor", None) is not None:
            raise Killed()  # the flush's checkpoint is sent by now, its writes not
        return stock_put_writes(self, config, writes, task_id, task_path)

    monkeypatch.setattr(PostgresSaver, "put_writes", dies_writing_tasks)
    stock = PostgresSaver(pool)
    dying, thread = HoldingPostgresSaver(pool), str(uuid.uuid4())
    config = {"configurable": {"thread_id": thread}}
    dying.track(thread, fresh=True)
    build(dying).invoke({"trail": ["start"]}, config)
    with pytest.raises(Killed):
        dying.flush(thread, keep=False)
    assert stock.get_tuple(config) is None, "the checkpoint did not commit without its writes"
    monkeypatch.undo()

    saver, thread = HoldingPostgresSaver(pool), str(uuid.uuid4())
    config = {"configurable": {"thread_id": thread}}
    saver.track(thread, fresh=True)
    build(saver).invoke({"trail": ["start"]}, config)
    saver.flush(thread, keep=False)
    stored = stock.get_tuple(config)
    assert stored.checkpoint["channel_values"]["trail"] == ["start", "a"]
    assert any(w[1] == "__interrupt__" for w in stored.pending_writes), "the writes came with it"


def test_a_cut_off_driver_does_not_write_its_checkpoint_over_a_newer_drivers(pool):
    """The fence (store.runs.advance_fence): a driver's flush commits only while no newer
    driver has begun the run. A driver whose lease lapsed (cut off from Redis, frozen) and
    that comes back after another one took the run over gets Superseded, and nothing it
    held is written; the driver that has begun it last writes as usual."""
    from langgraph.checkpoint.postgres import PostgresSaver
    from langgraph.graph import END, START, StateGraph
    from langgraph.types import interrupt

    from agentflow.store.db import get_engine, session_factory
    from agentflow.store.runs import RunStore, advance_fence
    from agentflow.workers.checkpoints import HoldingPostgresSaver, Superseded

    url = pool.conninfo if pool.conninfo.startswith("postgresql://") else "postgresql://" + pool.conninfo
    db_url = url.replace("postgresql://", "postgresql+psycopg://", 1)
    store = RunStore(session_factory(db_url))
    run_id = store.create({"id": "fenced"}, {"user_input": "hi"})

    def build(checkpointer, mark):
        g = StateGraph(State)
        g.add_node("a", lambda s: {"trail": [mark]})
        g.add_node("b", lambda s: interrupt({"kind": "step", "node": "b"}) and {"trail": ["b"]})
        g.add_edge(START, "a")
        g.add_edge("a", "b")
        g.add_edge("b", END)
        return g.compile(checkpointer=checkpointer)

    config = {"configurable": {"thread_id": run_id}}
    stale = HoldingPostgresSaver(pool)
    first = store.begin(run_id)["attempts"]
    stale.track(run_id, fresh=True, fence=advance_fence(run_id, first))
    build(stale, "stale").invoke({"trail": []}, config)
    # meanwhile its lease lapsed and another driver began the run
    newer = HoldingPostgresSaver(pool)
    second = store.begin(run_id)["attempts"]
    assert second == first + 1
    newer.track(run_id, fresh=True, fence=advance_fence(run_id, second))
    build(newer, "newer").invoke({"trail": []}, config)
    with pytest.raises(Superseded):
        stale.flush(run_id, keep=False)
    assert PostgresSaver(pool).get_tuple(config) is None, "the cut-off driver wrote nothing"
    newer.flush(run_id, keep=False)
    assert PostgresSaver(pool).get_tuple(config).checkpoint["channel_values"]["trail"] == ["newer"]
    get_engine(db_url).dispose()
