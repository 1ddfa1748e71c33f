"""Redis behind Sentinel: the master dies under load and AgentFlow carries on (contract 10).

Started here, on free ports: a Redis master, its replica and three sentinels
(`redis-server --sentinel`, down-after 1 s), a fresh Postgres database, the stand-in OpenAI
server, `agentflow serve`, `agentflow beat` and real `agentflow worker` processes (a driver
pool and an LLM pool), all given REDIS_SENTINELS + REDIS_SENTINEL_MASTER and no REDIS_URL.

A client submits runs of `input -> writer -> reviewer` (two LLM steps on one queue limited
to RATE msg/s with burst BURST) through the API, retrying what the API refuses (503 while
the broker fails over: such a run is marked failed and never calls the model). Some
seconds in, the master is SIGKILLed. Then:

- Sentinel promotes the replica;
- every run the API accepted (202) succeeds: none is lost, even one whose queue message
  the dead master acknowledged but never replicated (the workers' recovery sweep re-sends
  or wakes a run whose messages were lost);
- the stand-in server saw each step of each run exactly once (nothing paid twice);
- no 1 s window at the server holds more than RATE + BURST calls, across the failover.
"""

from __future__ import annotations

import re
import threading
import time

import httpx
import pytest

from agentflow.ratelimit.loadtest import worst_window
from agentflow.workers.launch import WorkerProcesses
from tests.scale.harness import (Api, FreshDatabase, SentinelRedis, base_env, beat, stop_everything, token, wait_until,
                                 writer_reviewer_spec)
from tests.servers.openai_server import OpenAIServer, last_user_message
from tests.helpers import run_coroutine

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(420)]

RATE, BURST = 4, 2
RUNS = 48
SUBMIT_EVERY = 0.4      # s between submissions: 5 LLM calls/s wanted, 4 allowed: the queue stays busy
KILL_AFTER = 16         # accepted runs before the master is killed
TAG = re.compile(r"^run=(\d+) step=(\w+)")


def spec() -> dict:
    return writer_reviewer_spec("failover", "Sentinel failover",
                                {"id": "q", "max_messages_per_second": RATE, "burst_size": BURST})


def warm_up(client: httpx.Client, llm) -> None:
    """Runs of an unlimited copy of the workflow, so every worker process has made its first
    (slow: imports, connections) model call before the measurement: a cold first call that
    reaches the server late would crowd the calls after it into one second."""
    warm = spec()
    warm.update(id="warm-up", queues=[])
    for node in warm["nodes"]:
        node.pop("queue", None)
    assert client.post("/workflows", json=warm).status_code == 201
    ids = [client.post("/workflows/warm-up/runs", json={"input": {"user_input": "warm", "metadata": {"n": 0}}})
           .json()["run_id"] for _ in range(6)]
    wait_until(lambda: all(client.get(f"/runs/{i}").json()["status"] == "succeeded" for i in ids), 90,
               "the warm-up runs succeeded")
    llm.reset()


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    root = tmp_path_factory.mktemp("sentinel")
    redis = SentinelRedis(root)
    db = FreshDatabase()
    llm = OpenAIServer().start()
    procs = []
    workers = None
    try:
        env = base_env(root / "home", DATABASE_URL=db.url, **redis.env(),
                       OPENAI_API_KEY="sk-test-sentinel-0000", OPENAI_BASE_URL=llm.base_url,
                       AGENTFLOW_VISIBILITY_TIMEOUT="10")
        from agentflow.store.db import dispose_all, migrate

        migrate(db.url)
        dispose_all()
        workers = WorkerProcesses(env, root)
        workers.start("driver", "runs,agentflow.control", concurrency=16, pool="threads")
        workers.start("llm", "agentflow.llm", concurrency=2)
        procs.append(beat(env, root))
        api = Api("api", env, root)
        procs.append(api)
        workers.wait_ready(["driver", "llm"])
        api.wait_healthy()
        yield redis, env, api, llm, workers
    finally:
        stop_everything(workers, procs, llm, redis, db)


def test_limiter_and_clients_find_the_master_through_sentinel(stack):
    """The one client factory, sync and asyncio, and the limiter's async checks (the API's
    per-request path) on Sentinel: they reach the master, and the limiter's keys carry
    the queue's hash tag (one Redis Cluster slot per queue)."""
    import asyncio

    import redis as redis_lib

    from agentflow.ratelimit import QueueLimits
    from agentflow.ratelimit.factory import redis_limiter
    from agentflow.redisconn import async_redis_client, redis_client
    from agentflow.settings import RedisConfig

    cluster = stack[0]
    config = RedisConfig.from_env(cluster.env())
    sync = redis_client(config)
    sync.set("af:probe", "1")
    master = redis_lib.Redis(port=cluster.master_port)
    assert master.get("af:probe") == b"1" and master.info("replication")["role"] == "master"

    async def via_asyncio():
        client = async_redis_client(config)
        try:
            return await client.get("af:probe")
        finally:
            await client.aclose()

    assert run_coroutine(via_asyncio) == b"1"

    limiter = redis_limiter(config, "af:rl-probe")
    queues = [QueueLimits(f"probe-{i}", max_requests_per_minute=6, burst_size=3) for i in range(2)]

    async def checks(n):
        return [await limiter.try_acquire_each_async(queues) for _ in range(n)]

    rounds = run_coroutine(lambda: checks(5))
    assert [[d.allowed for d in r] for r in rounds] == [[True, True]] * 3 + [[False, False]] * 2
    keys = {k.decode() for k in master.keys("af:rl-probe:*")}
    assert keys and all("{probe-0}" in k or "{probe-1}" in k for k in keys), keys
    limiter.clear()


def test_master_killed_under_load_loses_no_run_pays_nothing_twice_and_keeps_the_rate(stack):
    redis, env, api, llm, workers = stack
    client = httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {token(env)}"}, timeout=30)
    assert client.post("/workflows", json=spec()).status_code == 201
    warm_up(client, llm)

    accepted: dict[int, str] = {}   # n -> run id
    refused = 0
    killed = threading.Event()

    def submit(n: int) -> None:
        nonlocal refused
        while True:
            try:
                r = client.post("/workflows/failover/runs",
                                json={"input": {"user_input": "go", "metadata": {"n": n}}})
            except httpx.TransportError:
                refused += 1
                time.sleep(0.5)
                continue
            if r.status_code == 202:
                accepted[n] = r.json()["run_id"]
                return
            assert r.status_code == 503, r.text   # broker failing over: the run was marked failed
            refused += 1
            time.sleep(0.5)

    t_kill = None
    for n in range(RUNS):
        submit(n)
        if n + 1 == KILL_AFTER:
            redis.kill_master()
            t_kill = time.time()
            killed.set()
        time.sleep(SUBMIT_EVERY)

    # Sentinel promoted the replica
    wait_until(lambda: redis.master_address()[1] == redis.replica_port, 30, "the replica promoted")

    deadline = time.time() + 180
    pending = dict(accepted)
    records = {}
    while pending and time.time() < deadline:
        for n, run_id in list(pending.items()):
            r = client.get(f"/runs/{run_id}")
            if r.status_code == 200 and r.json()["status"] in ("succeeded", "failed", "cancelled"):
                records[n] = r.json()
                del pending[n]
        time.sleep(1)
    assert not pending, (f"runs never ended: {sorted(pending)}\ndriver: {workers.log('driver')[-3000:]}\n"
                         f"llm: {workers.log('llm')[-2000:]}")
    failed = {n: rec["error"] for n, rec in records.items() if rec["status"] != "succeeded"}
    assert not failed, f"accepted runs that did not succeed: {failed}"

    # every step of every accepted run reached the model exactly once
    calls: dict[tuple[int, str], int] = {}
    times = []
    for call in llm.calls_to("/v1/chat/completions"):
        m = TAG.match(last_user_message(call.json or {}))
        assert m, f"untagged call: {call.json}"
        key = (int(m.group(1)), m.group(2))
        calls[key] = calls.get(key, 0) + 1
        times.append(call.time)
    twice = {k: c for k, c in calls.items() if c > 1}
    assert not twice, f"steps paid more than once: {twice}"
    missing = [(n, s) for n in accepted for s in ("writer", "reviewer") if (n, s) not in calls]
    assert not missing, f"accepted runs whose steps never reached the model: {missing}"
    strays = {k for k in calls if k[0] not in accepted}
    assert not strays, f"calls for runs the API refused: {strays}"

    # the queue's rate held across the failover, counted where the calls land
    worst = worst_window(times, 1.0)
    ts = sorted(times)
    crowded = [[round(t - t_kill, 3) for t in ts if ts[i] <= t < ts[i] + 1] for i in range(len(ts))]
    crowded = [w for w in crowded if len(w) > RATE + BURST]
    assert worst <= RATE + BURST, (f"{worst} calls in one second, limit {RATE}/s + burst {BURST}; windows "
                                   f"(s after the kill): {crowded[:3]}")
    after = [t for t in times if t > t_kill]
    assert len(after) >= RUNS, "most of the work must happen after the failover for this test to mean anything"
    print(f"sentinel failover: {len(accepted)} runs accepted, {refused} submissions refused/retried, "
          f"{len(times)} calls, {len(after)} after the kill, worst 1 s window {worst}")
