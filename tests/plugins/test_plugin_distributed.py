"""The example plugin on real workers: `agentflow serve` (distributed) and `agentflow
worker` processes run from the venv the plugin was installed into; the plugin's steps
go to the queue its node type declares, which a worker started without --queues consumes."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from agentflow.workers.launch import WorkerProcesses
from tests.plugins.test_installed_plugin import EXAMPLE, MESSAGE, STATS
from tests.servers.agentflow_serve import AgentflowServe

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def stack(dist_env, plugin_venv, tmp_path_factory):
    env = dict(dist_env, AGENTFLOW_JWT_SECRET="test-secret-" + "p" * 24)
    workers = WorkerProcesses(env, tmp_path_factory.mktemp("plugin-workers"), python=plugin_venv.python)
    server = None
    try:
        workers.start("pdriver", "runs,agentflow.control", concurrency=2)
        workers.start("pall", None, concurrency=2)  # no --queues: every queue, the plugin's included
        workers.wait_ready(["pdriver", "pall"])
        server = AgentflowServe(env, tmp_path_factory.mktemp("plugin-api") / "api.log", timeout=90,
                                python=plugin_venv.python).start()
        token = plugin_venv.agentflow("token", "create", "--role", "admin", env=env).stdout.strip()
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as client:
            yield client, workers
    finally:
        if server is not None:
            server.stop()
        workers.stop_all()


def test_plugin_steps_run_on_their_declared_queue(stack):
    client, workers = stack
    assert "agentflow.text" in workers.log("pall")  # the queue list a worker prints on start
    spec = json.loads(EXAMPLE.read_text())
    assert client.post("/workflows", json=spec).status_code == 201
    r = client.post(f"/workflows/{spec['id']}/runs", json={"input": {"user_input": MESSAGE}})
    assert r.status_code == 202, r.text
    run_id = r.json()["run_id"]
    deadline = time.monotonic() + 90
    while (rec := client.get(f"/runs/{run_id}").json())["status"] not in ("succeeded", "failed", "cancelled"):
        assert time.monotonic() < deadline, f"run still {rec['status']}: {workers.log('pall')[-2000:]}"
        time.sleep(0.3)
    assert rec["status"] == "succeeded", rec["error"]
    assert rec["state"]["final_output"] == {"text_stats": STATS, "order_ids": ["12", "345"]}
    steps = {s["node_id"]: s for s in rec["steps"]}
    assert steps["stats"]["node_type"] == "text_stats"
    assert steps["stats"]["queue"] == "agentflow.text" and steps["stats"]["worker"].startswith("pall@")
    assert steps["orders"]["queue"] == "agentflow.api" and steps["orders"]["worker"].startswith("pall@")
    assert steps["report"]["queue"] == "runs"  # an aggregator runs in the driver
