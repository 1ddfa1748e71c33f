"""Many SSE watchers on one API process in distributed mode (api/run_events.py).

Started here: a fresh Postgres database, a private redis-server (so CLIENT LIST and PUBSUB
show this stack alone), a driver worker and one `agentflow serve` with REDIS_URL set. 500
raw-socket SSE clients follow 5 runs that wait for a person; every run is answered and
every watcher must get every event of its run, while Redis sees ONE subscriber connection
from the API process (not one per watcher). Then the subscriber's connection is killed
and the runs answered at once: the hub reconnects and no watcher misses a step or the end.
"""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

from agentflow.workers.launch import WorkerProcesses
from tests.helpers import run_coroutine
from tests.scale.harness import (Api, FreshDatabase, SentinelRedis, base_env, plain_redis, stop_everything, token,
                                 wait_until)

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(400)]

HUB_NAME = "agentflow-run-events"  # api/run_events.py CLIENT_NAME
SPEC = {"id": "watched", "name": "watched by many", "start_node": "input",
        "nodes": [{"id": "input", "type": "input"},
                  {"id": "ask", "type": "human", "config": {"prompt": "Go ahead for {user_input}?"}},
                  {"id": "final", "type": "aggregator", "config": {"fields": ["approval", "user_input"]}}],
        "edges": [{"from": "input", "to": "ask"}, {"from": "ask", "to": "final"}]}
# what each watcher must see of a run it watches while it waits, then is answered: the stored
# steps replayed, then live the answer, the last step starting and ending, and the end
EVERY_EVENT = [("step", "input", "succeeded"), ("step", "ask", "waiting"), ("step", "ask", "succeeded"),
               ("step", "final", "running"), ("step", "final", "succeeded"), ("end", None, "succeeded")]


def start_api_and_driver(root, db, procs: list, **redis_env: str):
    """A migrated database, one threaded driver worker and one `agentflow serve` on `redis_env`
    (the API in `procs`), SPEC saved; returns (workers, api, an authorised client)."""
    env = base_env(root / "home", DATABASE_URL=db.url, AGENTFLOW_RATE_IP_PER_MINUTE="0",
                   AGENTFLOW_RATE_TENANT_PER_MINUTE="0", **redis_env)
    from agentflow.store.db import dispose_all, migrate

    migrate(db.url)
    dispose_all()
    workers = WorkerProcesses(env, root)
    try:
        workers.start("driver", "runs,agentflow.control", concurrency=4, pool="threads")
        api = Api("api", env, root)
        procs.append(api)
        workers.wait_ready(["driver"])
        api.wait_healthy()
        http = httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {token(env)}"}, timeout=30)
        assert http.post("/workflows", json=SPEC).status_code == 201
    except BaseException:
        workers.stop_all()  # the caller's teardown never got them
        raise
    return workers, api, http


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    root = tmp_path_factory.mktemp("ssefan")
    db = FreshDatabase()
    procs, workers = [], None
    try:
        redis_proc, redis_url = plain_redis(root)
        procs.append(redis_proc)
        workers, api, http = start_api_and_driver(root, db, procs, REDIS_URL=redis_url)
        import redis

        yield api, http, redis.Redis.from_url(redis_url), workers
        http.close()
    finally:
        stop_everything(workers, procs, db)


def waiting_runs(http: httpx.Client, n: int) -> list[str]:
    ids = [http.post("/workflows/watched/runs", json={"input": {"user_input": f"user {i}"}}).json()["run_id"]
           for i in range(n)]
    wait_until(lambda: all(http.get(f"/runs/{r}").json()["status"] == "waiting" for r in ids), 60,
               "every run waiting for its person", interval=0.3)
    return ids


class Watcher:
    """A raw-socket SSE client: every event of the stream, in order, as (kind, data)."""

    def __init__(self, run_id: str):
        self.run_id = run_id
        self.events: list[tuple[str, dict]] = []
        self.waiting = asyncio.Event()
        self.error: str | None = None

    async def follow(self, port: int, auth: str) -> None:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(f"GET /runs/{self.run_id}/events HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n"
                         f"Accept: text/event-stream\r\n\r\n".encode())
            await writer.drain()
            kind = None
            while True:
                line = (await reader.readline()).decode()
                if not line:
                    raise ConnectionError("closed before the end event")
                if line.startswith("event: "):
                    kind = line[7:].strip()
                elif line.startswith("data: ") and kind:
                    self.events.append((kind, json.loads(line[6:])))
                    if kind == "waiting":
                        self.waiting.set()
                    if kind == "end":
                        break
                    kind = None
            writer.close()
        except Exception as exc:  # noqa: BLE001 - reported by the test
            self.error = f"{type(exc).__name__}: {exc}"
            self.waiting.set()


def subscribers(r) -> list[dict]:
    """Pub/sub connections of the private Redis: the hub's, and Celery's own (control)."""
    return [c for c in r.client_list() if int(c.get("sub", 0)) or int(c.get("psub", 0))]


def steps_and_end(events: list[tuple[str, dict]]) -> list[tuple]:
    return [(k, d.get("node_id"), d.get("status")) for k, d in events if k in ("step", "end")]


async def watch_and_answer(api: Api, http: httpx.Client, run_ids: list[str], per_run: int, during=None) -> list:
    auth = http.headers["Authorization"]
    watchers = [Watcher(r) for r in run_ids for _ in range(per_run)]
    gate = asyncio.Semaphore(100)  # a bounded number of handshakes at once

    async def one(w: Watcher) -> None:
        async with gate:
            task = asyncio.create_task(w.follow(api.port, auth))
            await w.waiting.wait()
        await task

    tasks = [asyncio.create_task(one(w)) for w in watchers]
    await asyncio.wait_for(asyncio.gather(*(w.waiting.wait() for w in watchers)), 120)
    assert not [w.error for w in watchers if w.error]
    observed = await asyncio.to_thread(during) if during is not None else None
    async with httpx.AsyncClient(base_url=api.url, headers={"Authorization": auth}, timeout=30) as client:
        for run_id in run_ids:
            deadline = time.monotonic() + 60
            while True:  # a 503 while the broker fails over (the Sentinel test)
                r = await client.post(f"/runs/{run_id}/resume", json={"node": "ask", "choice": "approve"})
                if r.status_code != 503 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.5)
            assert r.status_code == 202, r.text
    await asyncio.wait_for(asyncio.gather(*tasks), 120)
    return [watchers, observed]


def test_500_watchers_get_every_event_through_one_redis_subscriber(stack):
    api, http, r, _ = stack
    run_ids = waiting_runs(http, 5)
    before = subscribers(r)

    def while_watching():
        hub = [c for c in r.client_list() if c.get("name") == HUB_NAME]
        numsub = dict(r.pubsub_numsub(*[f"af:run-events:{x}" for x in run_ids]))
        return hub, numsub, subscribers(r)

    watchers, (hub, numsub, during) = run_coroutine(lambda: watch_and_answer(api, http, run_ids, 100, while_watching), 300)

    # one subscriber connection for the 500 streams: named, subscribed to the 5 runs (+ its idle channel)
    assert len(hub) == 1, hub
    assert int(hub[0]["sub"]) == len(run_ids) + 1, hub
    assert set(numsub.values()) == {1}, numsub
    assert len(during) - len(before) <= 1, (before, during)  # none per watcher

    assert not [w.error for w in watchers if w.error]
    for run_id in run_ids:
        record = http.get(f"/runs/{run_id}").json()
        assert record["status"] == "succeeded", record
        assert [s["status"] for s in record["steps"]] == ["succeeded"] * 3, record["steps"]
        for w in (w for w in watchers if w.run_id == run_id):
            assert steps_and_end(w.events) == EVERY_EVENT, w.events
            assert [k for k, _ in w.events].count("waiting") == 1, w.events
            assert w.events[-1][1]["state"] == record["state"]
    # the watchers left: the hub unsubscribed from their runs, and stays connected
    wait_until(lambda: set(dict(r.pubsub_numsub(*[f"af:run-events:{x}" for x in run_ids])).values()) == {0}, 10,
               "the hub unsubscribing from runs nobody watches")
    assert len([c for c in r.client_list() if c.get("name") == HUB_NAME]) == 1


def test_a_lost_subscriber_connection_loses_no_step_or_end(stack):
    api, http, r, _ = stack
    run_ids = waiting_runs(http, 3)

    def kill_the_hub_connection():
        (hub,) = [c for c in r.client_list() if c.get("name") == HUB_NAME]
        r.client_kill_filter(_id=hub["id"])
        return hub["id"]

    # the runs are answered right after the kill: their events may be published before the
    # hub has subscribed again, and the watchers must still end with every step
    started = time.monotonic()
    watchers, old_id = run_coroutine(lambda: watch_and_answer(api, http, run_ids, 20, kill_the_hub_connection), 300)
    assert not [w.error for w in watchers if w.error]
    for run_id in run_ids:
        record = http.get(f"/runs/{run_id}").json()
        assert record["status"] == "succeeded", record
        for w in (w for w in watchers if w.run_id == run_id):
            # a step's live `running` may fall in the gap; its end and the run's end may not
            assert [e for e in steps_and_end(w.events) if e[2] != "running"] == \
                [e for e in EVERY_EVENT if e[2] != "running"], w.events
            assert w.events[-1][1]["state"] == record["state"]
    assert time.monotonic() - started < 60
    wait_until(lambda: [c["id"] for c in r.client_list() if c.get("name") == HUB_NAME] not in ([], [old_id]), 15,
               "the hub connected again")
    assert "Redis unreachable" in api.tail(20_000)


def test_streams_follow_runs_across_a_sentinel_failover(tmp_path):
    root = tmp_path
    cluster = SentinelRedis(root)
    db = FreshDatabase()
    procs, workers = [], None
    try:
        workers, api, http = start_api_and_driver(root, db, procs, **cluster.env())
        run_ids = waiting_runs(http, 2)
        import redis

        promoted = redis.Redis(port=cluster.replica_port, socket_timeout=2)

        def fail_over():
            cluster.kill_master()
            wait_until(lambda: cluster.master_address()[1] == cluster.replica_port, 30, "the replica promoted")
            # the hub's one connection, now on the promoted replica, subscribed to both runs
            wait_until(lambda: [int(c["sub"]) for c in promoted.client_list() if c.get("name") == HUB_NAME]
                       == [len(run_ids) + 1], 30, "the hub subscribed on the new master")

        watchers, _ = run_coroutine(lambda: watch_and_answer(api, http, run_ids, 10, fail_over), 300)
        assert not [w.error for w in watchers if w.error]
        for w in watchers:
            assert steps_and_end(w.events) == EVERY_EVENT, w.events
        http.close()
    finally:
        stop_everything(workers, procs, cluster, db)
