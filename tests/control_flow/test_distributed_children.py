"""Child runs on real workers (default `agentflow worker`s): a parent waits for its children
without holding a worker, a map keeps its order, a failed child is caught by on_error, and a
worker SIGKILLed inside a child run loses nothing and pays nothing twice."""

from __future__ import annotations

import time

import pytest

from tests.distributed.conftest import dist_env, workers  # noqa: F401  (fixtures)
from tests.distributed.conftest import module_server, start_default_workers, store_for
from tests.distributed.conftest import submit_run as submit
from tests.distributed.conftest import wait_end as wait_stored_end
from tests.servers.http_api import HTTPAPIServer

from .specs import api_child, caught, child, mapper, parent

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(400)]


http_api = module_server(HTTPAPIServer)


@pytest.fixture(scope="module")
def cluster(workers):
    return start_default_workers(workers, "c1", "c2")


def save(env, spec: dict) -> None:
    from agentflow.store.db import session_factory
    from agentflow.store.workflows import WorkflowStore

    from agentflow.graph.spec import WorkflowSpec

    WorkflowStore(session_factory(env["DATABASE_URL"])).save("default", WorkflowSpec.model_validate(spec))


def children_of(store, run_id: str, node: str) -> list[dict]:
    """The child runs a node of `run_id` started (its step key's superstep is found by trying)."""
    for superstep in range(1, 6):
        found = store.step_children(f"{run_id}:{node}:{superstep}")
        if found:
            return found
    return []


def slow_child(workflow_id: str, base_url: str) -> dict:
    spec = api_child(workflow_id, base_url, path="/slow")
    spec["nodes"][1]["config"]["query"] = {"s": "{user_input}"}
    return spec


def test_a_parent_waits_for_its_child_and_a_map_keeps_its_order(cluster, dist_env):
    save(dist_env, child("dc-child"))
    save(dist_env, parent("dc-parent", "dc-child"))
    save(dist_env, mapper("dc-map", "dc-child"))
    store = store_for(dist_env)
    run_id = submit(dist_env, parent("dc-parent", "dc-child"), {"metadata": {"who": "ann"}})
    rec = wait_stored_end(store, run_id, 60)
    assert rec["status"] == "succeeded", rec["error"]
    assert rec["state"]["child_answer"] == "child saw hello ann"
    children = children_of(store, run_id, "sub")
    assert len(children) == 1 and children[0]["status"] == "succeeded"

    items = [{"n": i} for i in range(50)]
    run_id = submit(dist_env, mapper("dc-map", "dc-child"), {"metadata": {"items": items}})
    rec = wait_stored_end(store, run_id, 180)
    assert rec["status"] == "succeeded", rec["error"]
    assert rec["state"]["answers"] == [f"child saw {i}" for i in range(50)]


def test_a_failed_child_is_caught_by_on_error(cluster, dist_env, http_api):
    save(dist_env, api_child("dc-bad-child", http_api.url, path="/status/500"))
    save(dist_env, caught("dc-caught", "dc-bad-child"))
    store = store_for(dist_env)
    run_id = submit(dist_env, caught("dc-caught", "dc-bad-child"), {"user_input": "x"})
    rec = wait_stored_end(store, run_id, 90)
    assert rec["status"] == "succeeded", rec["error"]
    assert rec["state"]["error"]["node"] == "sub"
    assert rec["state"]["final_output"].startswith("recovered from sub:")


def test_a_worker_killed_inside_a_child_run_loses_nothing(cluster, dist_env, http_api):
    save(dist_env, slow_child("dc-slow-child", http_api.url))
    save(dist_env, mapper("dc-slow-map", "dc-slow-child"))
    store = store_for(dist_env)
    http_api.reset()
    items = [{"n": 2} for _ in range(4)]  # each child's call takes 2 s at the stand-in server
    run_id = submit(dist_env, mapper("dc-slow-map", "dc-slow-child"), {"metadata": {"items": items}})
    deadline = time.time() + 60
    while time.time() < deadline and not http_api.calls:
        time.sleep(0.05)
    assert http_api.calls, "no child reached the server"
    time.sleep(0.3)
    cluster.kill("c1")  # whatever c1 held (a child's step, a driver) is lost mid-way
    rec = wait_stored_end(store, run_id, 120)
    assert rec["status"] == "succeeded", (rec["error"], cluster.log("c2")[-3000:])
    assert len(rec["state"]["answers"]) == 4
    children = children_of(store, run_id, "each")
    assert [c["status"] for c in children] == ["succeeded"] * 4
    # each child's call was paid once, unless it was in flight on the killed worker
    finished_steps = [s for c in children for s in store.get(c["run_id"])["steps"]
                      if s["node_id"] == "call" and s["status"] == "succeeded"]
    assert len(finished_steps) == 4
    assert len(http_api.calls) <= 4 + 2  # at most the calls in flight on c1 (2 processes) again
    cluster.start("c1", queues=None, concurrency=None, pool=None)
