"""max_concurrency and on_error with real workers, Redis and Postgres.

Two `agentflow worker` processes serve the api queue (4 processes each, so 8 steps could
run at once); the queue's cap is measured where the calls land, at the stand-in server.
"""

from __future__ import annotations

import time

import pytest

from agentflow.graph.spec import Queue
from agentflow.graph.step import QueueCharge
from agentflow.ratelimit import QueueLimits

from tests.distributed.conftest import dist_env, workers  # noqa: F401  (fixtures)
from tests.distributed.conftest import module_server, start_workers, store_for
from tests.distributed.conftest import submit_run as submit
from tests.distributed.conftest import wait_end as wait_stored_end

from .probe import ConcurrencyServer, capped_workflow
from .specs import api_child

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(300)]
LEASE_S = 3.0


api_server = module_server(ConcurrencyServer)


@pytest.fixture(scope="module")
def cluster(dist_env, workers):
    return start_workers(dist_env, workers, {"driver": "runs,agentflow.control", "api1": "agentflow.api",
                                             "api2": "agentflow.api"}, concurrency=4,
                         env={"AGENTFLOW_CONCURRENCY_LEASE_S": str(LEASE_S)})


def wait_end(env, run_id: str, timeout: float = 120) -> dict:
    return wait_stored_end(store_for(env), run_id, timeout)


def limiter_stats(env, spec: dict):
    from agentflow.ratelimit.redis import RedisLimiter

    limits = QueueLimits.of(QueueCharge.of(Queue.model_validate(spec["queues"][0]), namespace=spec["id"]))
    return RedisLimiter(env["REDIS_URL"]).stats(limits)


def test_max_concurrency_2_never_exceeded_across_two_workers(cluster, dist_env, api_server):
    spec = capped_workflow("cf-dist-cap", api_server.url, 2, hold_s=0.5)
    ids = [submit(dist_env, spec, {"metadata": {"customer": "all"}}) for _ in range(8)]
    records = [wait_end(dist_env, i) for i in ids]
    assert all(r["status"] == "succeeded" for r in records), [r["error"] for r in records]
    assert api_server.served["all"] == 8
    assert api_server.peak["all"] == 2, api_server.peak
    workers = {s["worker"].split("@")[0] for r in records for s in r["steps"] if s["node_id"] == "call"}
    assert workers == {"api1", "api2"}, workers  # both workers took steps; the cap held across them
    assert limiter_stats(dist_env, spec).in_flight == 0  # every slot given back


def test_per_key_caps_are_independent(cluster, dist_env, api_server):
    spec = capped_workflow("cf-dist-keyed", api_server.url, 2, keyed=True, hold_s=0.8)
    ids = [submit(dist_env, spec, {"metadata": {"customer": c}}) for c in ["k-acme"] * 4 + ["k-globex"] * 4]
    records = [wait_end(dist_env, i) for i in ids]
    assert all(r["status"] == "succeeded" for r in records), [r["error"] for r in records]
    assert api_server.served["k-acme"] == 4 and api_server.served["k-globex"] == 4
    assert api_server.peak["k-acme"] == 2 and api_server.peak["k-globex"] == 2, api_server.peak


def test_slot_of_a_killed_worker_comes_free_when_its_lease_expires(cluster, dist_env, api_server):
    spec = capped_workflow("cf-dist-kill", api_server.url, 1, hold_s=20)
    victim = submit(dist_env, spec, {"metadata": {"customer": "victim"}})
    store = store_for(dist_env)
    deadline = time.time() + 60
    while api_server.now.get("victim", 0) < 1:
        assert time.time() < deadline, "the victim's call never reached the server"
        time.sleep(0.05)
    [step] = [s for s in store.get(victim)["steps"] if s["node_id"] == "call"]
    holder = step["worker"].split("@")[0]
    assert limiter_stats(dist_env, spec).in_flight == 1
    cluster.kill(holder)  # mid-step: nobody settles its slot
    killed_at = time.time()
    quick = dict(spec, nodes=[spec["nodes"][0], {**spec["nodes"][1], "config": {
        **spec["nodes"][1]["config"], "path": "/hold/{metadata.customer}?s=0.1"}}])
    after = submit(dist_env, quick, {"metadata": {"customer": "after"}})
    while not api_server.served.get("after"):
        assert time.time() - killed_at < 20, "the slot never came free"
        time.sleep(0.02)
    waited = time.time() - killed_at
    # the slot was held until its lease lapsed (renewed at most LEASE_S / 3 before the kill)
    assert LEASE_S * 2 / 3 - 0.3 <= waited <= LEASE_S + 4, waited
    assert wait_end(dist_env, after)["status"] == "succeeded"
    survivor = ({"api1", "api2"} - {holder}).pop()
    assert [s["worker"].split("@")[0] for s in store.get(after)["steps"] if s["node_id"] == "call"] == [survivor]
    cluster.start(holder, "agentflow.api", concurrency=4)  # for the tests after this one
    cluster.wait_ready([holder])


def test_on_error_catches_a_remote_node_failure(cluster, dist_env, api_server):
    spec = api_child("cf-dist-onerror", api_server.url, path="/status/500")
    spec["nodes"].append({"id": "fallback", "type": "aggregator",
                          "config": {"fields": ["error"], "template": "fallback: {error.message}"}})
    spec["edges"].append({"from": "call", "to": "fallback", "on_error": True})
    record = wait_end(dist_env, submit(dist_env, spec, {"user_input": "x"}))
    assert record["status"] == "succeeded", (record["error"], cluster.log("driver")[-3000:])
    assert record["state"]["error"]["node"] == "call" and "500" in record["state"]["error"]["message"]
    assert [s["node_id"] for s in record["steps"] if s["status"] == "succeeded"] == ["in", "fallback"]
