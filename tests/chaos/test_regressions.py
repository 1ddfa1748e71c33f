"""Regression tests for the bugs the chaos runs found, each small and fast (not `-m chaos`).

1. kombu: a worker died ("Unrecoverable error: AttributeError") when the broker connection
   dropped while it held unacked messages, or when a task that ran across the reconnect
   acked on the dead channel (workers/compat.py).
2. A driver waited forever on a node task whose message or result Redis lost in a restart
   (workers/node_dispatch.py re-reads the store and re-sends), and failed the run when a
   node task crashed on an infrastructure blip (it is now sent again, twice at most).
3. Leases vanished with a Redis restart and were never taken back (workers/lease.py).
4. A dropped database connection failed runs and crashed node tasks ("node task ended
   abnormally: FAILURE"); now the store retries on a fresh connection and drivers/node
   tasks retry (workers/infra.py, store/runs.py), the checkpointer pool checks connections.
5. Failed steps read "node 'c' failed: node 'c' failed: ..." (workers/node_task.py).
6. Steady 429s opened the circuit breaker and failed every run of a worker (resilience.py).
7. The reaper re-sent every long-queued run on every tick (now the sweep, workers/recovery.py).
"""

from __future__ import annotations

import time
import uuid

import pytest

from tests.needs import need_postgres, need_redis


def _redis():
    return need_redis("redis://127.0.0.1:6379/15")


# ---------------------------------------------------------------- 1. kombu dead channels


@pytest.mark.redis
def test_closing_a_channel_whose_connection_is_gone_does_not_raise():
    _redis()
    from kombu import Connection

    import agentflow.workers.app  # noqa: F401  (installs the guard)

    channel = Connection("redis://127.0.0.1:6379/15").channel()
    channel.qos._delivered["tag-1"] = object()  # an unacked message
    channel.connection.client = None              # what a lost broker connection leaves
    channel.close()                               # was: AttributeError -> worker exits
    assert not channel.qos._delivered


@pytest.mark.redis
def test_acking_on_a_dead_channel_is_a_connection_error_celery_handles():
    _redis()
    from kombu import Connection
    from kombu.transport.redis import Transport

    import agentflow.workers.app  # noqa: F401

    channel = Connection("redis://127.0.0.1:6379/15").channel()
    channel.connection = None
    with pytest.raises(Transport.connection_errors):  # was: AttributeError -> worker exits
        channel.qos.ack("tag-2")


# ---------------------------------------------------------------- 2. lost node tasks


class FakeRedis:
    def __init__(self):
        self.keys: dict[str, str] = {}

    def exists(self, key):
        return int(key in self.keys)

    def get(self, key):
        return self.keys.get(key)

    def set(self, key, value, nx=False, ex=None):
        if nx and key in self.keys:
            return None
        self.keys[key] = value
        return True

    def delete(self, key):
        self.keys.pop(key, None)


class FakeStore:
    def __init__(self):
        self.outcome: tuple = ("running", None, None, None)
        self.running = False

        self.reads = 0

    def step_outcome(self, run_id, key):
        self.reads += 1
        return self.outcome

    def step_running(self, key):
        return self.running


class Paused(Exception):
    """What LangGraph's interrupt stands for here: the run pauses on a step."""


@pytest.fixture
def dispatcher(monkeypatch):
    from agentflow.graph.validate import parse_valid
    from agentflow.workers import keys, node_dispatch
    from tests.chaos.harness import chaos_spec

    fake_redis, store, sent, waits = FakeRedis(), FakeStore(), [], []

    def pause(reason):
        waits.append(reason)
        raise Paused()

    monkeypatch.setattr(node_dispatch.resources, "redis_client", lambda: fake_redis)
    monkeypatch.setattr(node_dispatch.resources, "store", lambda: store)
    monkeypatch.setattr(node_dispatch, "wait_for", pause)
    def send(*_a, **k):
        sent.append(k["task_id"])
        metas.append(k["kwargs"]["meta"])

    metas: list[dict] = []
    monkeypatch.setattr(node_dispatch.celery_app, "send_task", send)
    d = node_dispatch.NodeDispatcher("run1", parse_valid(chaos_spec()))
    d.metas = metas
    return d, fake_redis, store, sent, waits, keys


def test_a_finished_step_is_read_back_and_a_failed_one_fails_readably(dispatcher):
    d, fake_redis, store, sent, waits, keys = dispatcher
    fake_redis.keys[keys.step_sent("run1:b:2")] = "1"  # it was sent on an earlier advance
    store.outcome = ("running", "succeeded", {"draft_b": "from the store"}, None)
    assert d("b", {}, 2) == {"draft_b": "from the store"}
    store.outcome = ("running", "failed", None, "provider said no")
    from agentflow.graph.step import StepFailed

    with pytest.raises(StepFailed) as info:
        d("b", {}, 2)
    assert str(info.value) == "node 'b' failed: provider said no"
    assert sent == [] and waits == []


def test_a_step_is_sent_once_and_the_run_pauses_on_it(dispatcher):
    d, fake_redis, store, sent, waits, keys = dispatcher
    for _ in range(2):  # the run resumes (news of another step) before this one ended
        with pytest.raises(Paused):
            d("b", {}, 2)
    assert sent == ["run1:b:2"] and waits == [{"kind": "step", "node": "b", "key": "run1:b:2"}] * 2
    # a step never sent has no outcome to read: only the second look asks the store
    assert store.reads == 1
    assert d.metas[0].get("first") is True  # so its node task skips the look-up too


def test_a_node_task_looks_up_an_earlier_outcome_unless_it_is_the_first_message():
    from types import SimpleNamespace

    from agentflow.workers.node_task import _again, _first_delivery

    fresh = SimpleNamespace(retries=0, delivery_info={"routing_key": "agentflow.db"})
    assert _first_delivery(fresh, {"first": True})
    assert not _first_delivery(fresh, {})  # sent again by a driver (an orphaned step)
    assert not _first_delivery(fresh, _again({"first": True}))  # put back (rate limit, a held lease)
    assert not _first_delivery(SimpleNamespace(retries=1, delivery_info={}), {"first": True})
    redelivered = SimpleNamespace(retries=0, delivery_info={"redelivered": True})
    assert not _first_delivery(redelivered, {"first": True})  # its worker died: it may have ended


def test_a_lost_message_is_sent_again_under_the_same_id(dispatcher):
    d, fake_redis, store, sent, waits, keys = dispatcher
    with pytest.raises(Paused):
        d("b", {}, 2)
    fake_redis.keys.clear()  # Redis restarted empty: the message and its marker are gone
    with pytest.raises(Paused):
        d("b", {}, 2)
    assert sent == ["run1:b:2", "run1:b:2"] and fake_redis.exists(keys.step_sent("run1:b:2"))


def test_a_step_its_driver_died_sending_is_sent_again(dispatcher):
    """The marker says "sending" until the message is out: a driver killed in between left a
    step nobody will run; the next driver (it holds the run's lease) sends it again, as a copy
    that looks its outcome up, and marks it sent."""
    d, fake_redis, store, sent, waits, keys = dispatcher
    with pytest.raises(Paused):
        d("b", {}, 2)
    assert fake_redis.keys[keys.step_sent("run1:b:2")] == "1"  # sent, then marked sent
    fake_redis.keys[keys.step_sent("run1:c:2")] = "sending"  # marked; the driver died before sending
    with pytest.raises(Paused):
        d("c", {}, 2)
    assert sent == ["run1:b:2", "run1:c:2"] and "first" not in d.metas[1]
    assert fake_redis.keys[keys.step_sent("run1:c:2")] == "1"
    with pytest.raises(Paused):
        d("c", {}, 2)
    assert sent == ["run1:b:2", "run1:c:2"]  # once sent, not again


def test_a_running_step_without_its_lease_is_resent_only_when_seen_twice(dispatcher):
    d, fake_redis, store, sent, waits, keys = dispatcher
    fake_redis.keys[keys.step_sent("run1:c:2")] = "1"
    store.running = True
    fake_redis.keys[keys.step_lock("run1:c:2")] = "worker"   # a live worker holds it
    with pytest.raises(Paused):
        d("c", {}, 2)
    assert sent == []
    del fake_redis.keys[keys.step_lock("run1:c:2")]          # the lease vanished (restart, or death)
    with pytest.raises(Paused):
        d("c", {}, 2)
    assert sent == [], "a live worker re-takes its lease within seconds: wait for the next look"
    with pytest.raises(Paused):
        d("c", {}, 2)
    assert sent == ["run1:c:2"], "still no lease at the next look: its worker died"


# ---------------------------------------------------------------- 3. leases after a restart


@pytest.mark.redis
def test_a_vanished_lease_is_taken_back_and_a_stolen_one_is_noticed():
    client = _redis()
    from agentflow.workers.lease import Lease

    key = f"af:test-lease:{uuid.uuid4().hex}"
    beats = []
    lease = Lease(client, key, ttl=1, on_renew=lambda: beats.append(1))
    assert lease.acquire()
    try:
        client.delete(key)                       # Redis restarted empty
        deadline = time.time() + 5
        while client.get(key) is None and time.time() < deadline:
            time.sleep(0.05)
        assert client.get(key) == lease.token.encode(), "the live owner took its lease back"
        client.set(key, "someone-else")          # a duplicate delivery got it meanwhile
        deadline = time.time() + 5
        while not lease.lost and time.time() < deadline:
            time.sleep(0.05)
        assert lease.lost and client.get(key) == b"someone-else"
        assert beats, "the heartbeat went on"
    finally:
        lease.release()
        client.delete(key)


# ---------------------------------------------------------------- 4. dropped database connections


def test_transient_errors_are_told_apart_from_failures():
    import psycopg
    import redis
    from sqlalchemy.exc import OperationalError, ProgrammingError

    from agentflow.graph.step import StepFailed
    from agentflow.workers.infra import transient

    dropped = OperationalError("SELECT 1", {}, psycopg.OperationalError("terminating connection"),
                               connection_invalidated=True)
    assert transient(dropped)
    assert transient(redis.exceptions.ConnectionError("Connection refused"))
    try:
        try:
            raise redis.exceptions.ConnectionError("reset")
        except redis.exceptions.ConnectionError as inner:
            raise RuntimeError("wrapped") from inner
    except RuntimeError as outer:
        assert transient(outer)
    assert not transient(StepFailed("b", "LLM source 'gpt' answered 500"))
    assert not transient(ValueError("bad"))
    assert not transient(ProgrammingError("SELECT x", {}, Exception("no column x")))


def test_store_calls_are_retried_on_a_fresh_connection():
    import psycopg
    from sqlalchemy.exc import OperationalError

    from agentflow.store.runs import retry_on_disconnect

    calls = []

    @retry_on_disconnect
    def write():
        calls.append(1)
        if len(calls) < 3:
            raise OperationalError("UPDATE steps", {}, psycopg.OperationalError("terminating connection"),
                                   connection_invalidated=True)
        return "written"

    assert write() == "written" and len(calls) == 3

    @retry_on_disconnect
    def bad_sql():
        calls.append(1)
        raise OperationalError("SELEC", {}, psycopg.OperationalError("syntax"), connection_invalidated=False)

    calls.clear()
    with pytest.raises(OperationalError):
        bad_sql()
    assert len(calls) == 1, "only a dropped connection is retried"


@pytest.fixture
def pg_db():
    need_postgres()
    from tests.databases import fresh_database

    with fresh_database("af_chaos_") as url:
        yield url


def _terminate_all(url: str) -> int:
    """Terminate every backend of the database, and wait until they are gone (each has
    then sent its FATAL message and closed its socket: what a client sees next)."""
    import psycopg

    name = url.rsplit("/", 1)[1]
    with psycopg.connect(need_postgres(), autocommit=True) as admin:
        count = admin.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                              "WHERE datname = %s AND pid <> pg_backend_pid()", (name,)).fetchone()[0]
        deadline = time.monotonic() + 10
        while admin.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                            (name,)).fetchone()[0] and time.monotonic() < deadline:
            time.sleep(0.02)
    return count


@pytest.mark.postgres
def test_the_checkpointer_pool_replaces_connections_the_server_dropped(pg_db, monkeypatch):
    from agentflow.workers import resources

    class S:
        db_url = pg_db

    monkeypatch.setattr(resources, "get_settings", lambda: S())
    monkeypatch.setattr(resources, "_checkpointer", None)
    saver = resources.checkpointer()
    try:
        config = {"configurable": {"thread_id": "t1"}}
        assert saver.get_tuple(config) is None
        assert _terminate_all(pg_db) >= 1
        assert saver.get_tuple(config) is None  # was: psycopg.OperationalError -> the run failed
    finally:
        saver.conn.close()
        monkeypatch.setattr(resources, "_checkpointer", None)


@pytest.mark.postgres
def test_the_run_store_survives_a_dropped_connection_while_a_step_runs(pg_db):
    from agentflow.store.db import get_engine, session_factory
    from agentflow.store.runs import RunStore

    store = RunStore(session_factory(pg_db))
    run_id = store.create({"id": "x"}, {"user_input": "hi"})
    store.step_started(run_id, "b", "llm", step_key=f"{run_id}:b:1")
    _terminate_all(pg_db)
    store.step_ended(run_id, "b", status="succeeded", duration_ms=1.0, output={"draft_b": "ok"})
    assert store.finished_step_output(f"{run_id}:b:1") == {"draft_b": "ok"}
    get_engine(pg_db).dispose()


@pytest.mark.postgres
def test_pooled_connections_are_pinged_only_when_idle_or_dropped(pg_db, monkeypatch):
    """The store pings a pooled connection only when it sat idle or the server wrote to it
    (a terminated backend does): a hot connection costs no extra round trip, and one the
    server dropped a moment ago is still replaced before use, not failed on."""
    from sqlalchemy import text

    from agentflow.store import db

    engine = db.get_engine(pg_db)
    pings = []
    real = engine.dialect.do_ping
    monkeypatch.setattr(engine.dialect, "do_ping", lambda conn: pings.append(1) or real(conn))
    with engine.connect() as conn:
        before = conn.execute(text("SELECT pg_backend_pid()")).scalar()
    pings.clear()
    for _ in range(5):  # used just now: trusted
        with engine.connect() as conn:
            assert conn.execute(text("SELECT pg_backend_pid()")).scalar() == before
    assert pings == []
    assert _terminate_all(pg_db) >= 1
    with engine.connect() as conn:  # detected without waiting for the idle window
        assert conn.execute(text("SELECT pg_backend_pid()")).scalar() != before
    assert pings == [1]
    engine.dispose()


# ---------------------------------------------------------------- 5. readable reasons


@pytest.mark.redis
def test_a_failed_step_names_its_node_once(monkeypatch, tmp_path):
    """The node task returned str(StepFailed) and the driver wrapped it again."""
    client = _redis()
    from agentflow.graph import resilience
    from agentflow.graph.validate import parse_valid
    from agentflow.runs.events import MemoryEventBus
    from agentflow.store.db import migrate, session_factory
    from agentflow.store.runs import RunStore
    from agentflow.workers import node_task
    from agentflow.workers.node_dispatch import NodeDispatcher
    from tests.chaos.harness import chaos_spec
    from tests.servers.openai_server import OpenAIServer

    url = f"sqlite:///{tmp_path / 'r.db'}"
    migrate(url)
    store = RunStore(session_factory(url))
    spec = chaos_spec()
    spec["sources"][0]["max_retries"] = 0
    run_id = store.create(spec, {"user_input": "x", "metadata": {"run_tag": "abc"}})
    monkeypatch.setattr(node_task.resources, "store", lambda: store)
    monkeypatch.setattr(node_task.resources, "redis_client", lambda: client)
    monkeypatch.setattr(node_task.resources, "bus", lambda: MemoryEventBus())
    monkeypatch.setattr(node_task.resources, "limiter", lambda: None)
    node_task.clear_caches()
    with OpenAIServer() as srv:
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        monkeypatch.setenv("OPENAI_BASE_URL", srv.base_url)
        srv.fail_next(1, status=400)
        try:
            reply = node_task.run_node(run_id, "b", f"{run_id}:b:1", {"user_input": "x", "metadata": {}})
        finally:
            node_task.clear_caches()
            resilience.reset_breakers()
    assert reply["ok"] is False
    assert not reply["error"].startswith("node "), reply["error"]
    from agentflow.graph.step import StepFailed

    message = str(StepFailed("b", reply["error"]))  # what the driver records
    assert message.count("failed:") == 1 and message.startswith("node 'b' failed: LLM source 'gpt' answered 400")
    assert NodeDispatcher  # the driver side wraps exactly once (node_dispatch._wait)


# ---------------------------------------------------------------- 6. 429 and the breaker


def test_steady_429s_do_not_open_the_breaker_but_5xx_do(reset_resilience):
    from agentflow.graph.errors import ProviderError

    resilience = reset_resilience
    resilience.configure_breaker("p", fail_max=2, reset_timeout=30)

    def answer(status):
        def fn():
            raise ProviderError(f"answered {status}", status=status, retryable=True, retry_after=0)
        return fn

    for _ in range(5):
        with pytest.raises(ProviderError):
            resilience.call("p", answer(429), retries=0)
    assert resilience.breaker("p").current_state == "closed"
    for _ in range(2):
        with pytest.raises(ProviderError):
            resilience.call("p", answer(503), retries=0)
    assert resilience.breaker("p").current_state == "open"


# ---------------------------------------------------------------- 7. the reaper (now the sweep)


@pytest.mark.postgres
def test_the_sweep_resends_a_lost_queued_run_once_per_period(pg_db):
    """The beat reaper re-sent every long-queued run on every tick; the sweep that replaced it
    stamps what it looked at, so a run is looked at (and re-sent) once per STALE_AFTER."""
    from datetime import timedelta

    from sqlalchemy import update

    from agentflow.store.db import get_engine, session_factory, session_scope
    from agentflow.store.models import Run, utcnow
    from agentflow.store.runs import RunStore
    from agentflow.workers.recovery import STALE_AFTER, sweep

    store = RunStore(session_factory(pg_db))
    run_id = store.create({"id": "x"}, {"user_input": "hi"})
    with session_scope(store.factory) as s:
        s.execute(update(Run).where(Run.id == run_id).values(created_at=utcnow() - timedelta(seconds=STALE_AFTER * 3)))

    import base64
    import json

    import redis

    from agentflow.workers.app import RUN_QUEUE, make_celery
    from tests.distributed.conftest import claim_redis_db, release_redis_db

    db = claim_redis_db()  # an empty Redis of its own: restarted empty, no locks, no messages
    client = redis.Redis(host="127.0.0.1", db=db)
    try:
        app = make_celery(f"redis://127.0.0.1:6379/{db}")
        assert [sweep(store, client, app) for _ in range(3)] == [1, 0, 0]
        sent = [json.loads(base64.b64decode(json.loads(m)["body"]))[0][0] for m in client.lrange(RUN_QUEUE, 0, -1)]
        assert sent == [run_id], "re-sent once, not on every sweep"
    finally:
        client.flushdb()
        release_redis_db(db)
    get_engine(pg_db).dispose()


# ---------------------------------------------------------------- 8. deep pages (bench/scale.py)


@pytest.mark.postgres
def test_a_deep_page_seeks_to_its_cursor_instead_of_walking_every_row_before_it(pg_db):
    """The cursor condition was `a < x OR (a = x AND id < y)`: PostgreSQL walked (and
    filtered out) every row before the cursor, so page n cost O(n). A row-value comparison
    `(a, id) < (x, y)` seeks the index."""
    from sqlalchemy import event

    from agentflow.store.db import get_engine, session_factory
    from agentflow.store.runs import RunStore
    from agentflow.store.workflows import WorkflowStore
    from bench.scale import load

    n = 20_000
    loaded = load(pg_db, n, n)
    engine = get_engine(pg_db)
    factory = session_factory(pg_db)
    seen: list[tuple[str, dict]] = []

    def capture(conn, cursor, statement, params, context, executemany):
        if "LIMIT" in statement and ("FROM workflows" in statement or "FROM runs" in statement):
            seen.append((statement, params))

    event.listen(engine, "before_cursor_execute", capture)
    try:
        wf = WorkflowStore(factory)
        first, _ = wf.list("default", limit=50)
        with engine.connect() as c:
            from sqlalchemy import text

            mid = c.execute(text("SELECT updated_at, id FROM workflows ORDER BY updated_at DESC, id DESC "
                                 "OFFSET :o LIMIT 1"), {"o": n // 2}).one()
            mid_run = c.execute(text("SELECT id FROM runs ORDER BY created_at DESC, id DESC OFFSET :o LIMIT 1"),
                                {"o": n // 2}).scalar()
        seen.clear()
        page, _ = wf.list("default", limit=50, after=(mid[0], mid[1]))
        runs_page, _ = RunStore(factory).list(limit=50, before=mid_run)
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    assert len(page) == 50 and len(runs_page) == 50
    assert page[0]["id"] < mid[1] or page[0]["updated_at"] < mid[0]
    assert len(seen) == 2, seen
    raw = engine.raw_connection()
    try:
        for statement, params in seen:
            cur = raw.cursor()
            cur.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + statement, params)
            plan = cur.fetchone()[0][0]["Plan"]

            def removed(node) -> int:
                return node.get("Rows Removed by Filter", 0) + sum(removed(p) for p in node.get("Plans", []))

            assert removed(plan) < 1000, (statement, removed(plan))
    finally:
        raw.close()
    assert loaded["workflows"] == n
    engine.dispose()
