"""Runs that wait without holding a worker (contract section 5), tried the way a user starts
things: `agentflow serve` and `agentflow worker` with no arguments, no beat.

- 48 runs at once on two default workers all finish (a driver never holds a slot a step needs);
- one worker at `--concurrency 1` finishes 12 parallel triage runs;
- a `human` run waits, survives a SIGKILL of every process, and resumes by POST /runs/{id}/resume;
- a `human` node's timeout takes its `on_timeout` choice with nobody polling;
- after the whole fleet is SIGKILLed mid-run, a fresh worker (no beat) finishes every run within
  30 s, and no step that had finished is paid again (counted at the stand-in server).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from tests.distributed.conftest import module_server, start_default_workers, store_for
from tests.helpers import triage
from tests.servers.agentflow_serve import AgentflowServe
from tests.servers.openai_server import OpenAIServer

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(600)]

TERMINAL = ("succeeded", "failed", "cancelled")


class Api(AgentflowServe):
    """One `agentflow serve` process in distributed mode, with an admin token; `kill()` and
    `start()` again restart it in place."""

    def __init__(self, env: dict, logdir):
        super().__init__(env, logdir / "api.log")
        token = subprocess.run([sys.executable, "-m", "agentflow.cli", "token", "create", "--tenant", "default",
                                "--role", "admin", "--ttl", "3600"], env=env, capture_output=True, text=True,
                               check=True).stdout.strip()
        self.client = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {token}"}, timeout=30)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=20)

    def wait(self, run_id: str, timeout: float = 120, until=TERMINAL) -> dict:
        deadline = time.time() + timeout
        rec: dict = {}
        while time.time() < deadline:
            r = self.client.get(f"/runs/{run_id}")
            if r.status_code == 200:
                rec = r.json()
                if rec["status"] in until:
                    return rec
            time.sleep(0.2)
        raise AssertionError(f"run {run_id} is still {rec.get('status')}: {json.dumps(rec, default=str)[:1500]}")


llm = module_server(OpenAIServer)


@pytest.fixture(scope="module")
def env(dist_env, llm):
    import psycopg

    with psycopg.connect(dist_env["DATABASE_URL"], autocommit=True) as conn:
        conn.execute("CREATE TABLE orders (id serial PRIMARY KEY, customer text, item text, status text)")
        conn.execute("INSERT INTO orders (customer, item, status) VALUES ('alice','keyboard','shipped')")
    dist_env.update({"OPENAI_API_KEY": "sk-test-events-0000", "OPENAI_BASE_URL": llm.base_url,
                     "SHOP_DSN": dist_env["DATABASE_URL"], "AGENTFLOW_JWT_SECRET": "test-secret-" + "e" * 24,
                     # the defaults a user gets: not the short timeouts of the other distributed tests
                     "AGENTFLOW_VISIBILITY_TIMEOUT": "20"})
    return dist_env


@pytest.fixture(scope="module")
def api_server(env, tmp_path_factory):
    """One `agentflow serve` for the module: the API keeps nothing of a run in its process
    (runs live in Postgres and Redis), so the tests need not pay a fresh start each."""
    api = Api(env, tmp_path_factory.mktemp("api"))
    yield api
    api.kill()


@pytest.fixture
def api(api_server, workers):
    """The module's API, running (a test that killed it may have left it down); each test
    starts the workers it needs and they are stopped after it."""
    if api_server.proc is None or api_server.proc.poll() is not None:
        api_server.start()
    yield api_server
    workers.stop_all()
    workers.procs.clear()


ONE_LLM = {"id": "one-llm", "name": "One LLM step", "start_node": "write",
           "nodes": [{"id": "write", "type": "llm", "source": "gpt", "config": {"prompt": "Say hi to {user_input}"}}],
           "edges": [],
           "sources": [{"id": "gpt", "kind": "llm", "model": "gpt-4o-mini", "api_key_env": "OPENAI_API_KEY",
                        "base_url_env": "OPENAI_BASE_URL"}]}


def start_runs(api: Api, workflow: str, texts: list[str], metadata: dict | None = None) -> list[str]:
    ids = []
    for text in texts:
        r = api.client.post(f"/workflows/{workflow}/runs",
                            json={"input": {"user_input": text, "metadata": metadata or {"customer": "alice"}}})
        assert r.status_code == 202, r.text
        ids.append(r.json()["run_id"])
    return ids


def test_two_default_workers_finish_48_runs_at_once(api, workers):
    assert api.client.post("/workflows", json=ONE_LLM).status_code == 201
    start_default_workers(workers, "d1", "d2")
    ids = start_runs(api, "one-llm", [f"person {i}" for i in range(48)])
    deadline = time.time() + 90
    for run_id in ids:
        rec = api.wait(run_id, timeout=max(1.0, deadline - time.time()))
        assert rec["status"] == "succeeded", rec["error"]
        assert rec["state"]["text_result"]


def test_one_worker_at_concurrency_1_finishes_12_triage_runs(api, workers):
    assert api.client.post("/workflows", json=triage()).status_code == 201
    workers.start("solo", queues=None, concurrency=1, pool=None)
    workers.wait_ready(["solo"])
    ids = start_runs(api, "support-triage", [f"please explain and draw item {i}, both" for i in range(12)])
    for run_id in ids:
        rec = api.wait(run_id, timeout=180)
        assert rec["status"] == "succeeded", (rec["error"], workers.log("solo")[-2000:])
        assert {s["node_id"] for s in rec["steps"] if s["status"] == "succeeded"} >= {"input", "router", "orders",
                                                                                      "final"}


APPROVAL = {"id": "approval", "name": "Approval", "start_node": "input",
            "nodes": [{"id": "input", "type": "input"},
                      {"id": "ask", "type": "human", "config": {"prompt": "Send a reply to {user_input}?",
                                                                "output_key": "approval"}},
                      {"id": "write", "type": "llm", "source": "gpt", "config": {"prompt": "Answer {user_input}"}},
                      {"id": "final", "type": "aggregator", "config": {"fields": ["approval", "text_result"]}}],
            "edges": [{"from": "input", "to": "ask"},
                      {"from": "ask", "to": "write", "condition": "approval.choice == 'approve'"},
                      {"from": "ask", "to": "final", "condition": "approval.choice == 'reject'"},
                      {"from": "write", "to": "final"}],
            "sources": ONE_LLM["sources"]}


def test_a_human_run_waits_across_a_restart_of_every_process(api, workers, llm):
    assert api.client.post("/workflows", json=APPROVAL).status_code == 201
    start_default_workers(workers, "h1")
    (run_id,) = start_runs(api, "approval", ["customer 77"])
    rec = api.wait(run_id, timeout=60, until=("waiting",))
    assert rec["waiting_for"] == [{"node": "ask", "prompt": "Send a reply to customer 77?",
                                   "choices": ["approve", "reject"]}]
    # wrong answers change nothing
    r = api.client.post(f"/runs/{run_id}/resume", json={"node": "write", "choice": "approve"})
    assert r.status_code == 422 and "not waiting" in r.json()["detail"]
    r = api.client.post(f"/runs/{run_id}/resume", json={"node": "ask", "choice": "maybe"})
    assert r.status_code == 422 and "choices" in r.json()["detail"]

    # every process dies; nothing is held meanwhile, and the run still waits afterwards
    api.kill()
    workers.kill("h1")
    time.sleep(1)
    api.start()
    start_default_workers(workers, "h2")
    assert api.client.get(f"/runs/{run_id}").json()["status"] == "waiting"
    calls_before = llm.call_count

    r = api.client.post(f"/runs/{run_id}/resume", json={"node": "ask", "choice": "approve",
                                                        "values": {"note": "ok by me"}})
    assert r.status_code == 202, r.text
    rec = api.wait(run_id, timeout=60)
    assert rec["status"] == "succeeded", rec["error"]
    answer = rec["state"]["approval"]
    assert answer["choice"] == "approve" and answer["values"] == {"note": "ok by me"} and answer["by"]
    assert rec["state"]["text_result"] and llm.call_count == calls_before + 1
    # answered once: a second answer is refused, and the audit log names who answered
    assert api.client.post(f"/runs/{run_id}/resume", json={"node": "ask", "choice": "reject"}).status_code == 409
    audit = api.client.get("/audit", params={"action": "run.resume"}).json()
    entries = [e for e in audit["items"] if e.get("target_id") == run_id]
    assert entries and entries[0]["subject"] == answer["by"]


def test_a_human_timeout_takes_its_choice_without_anyone_polling(api, workers, llm):
    spec = json.loads(json.dumps(APPROVAL))
    spec["id"] = "approval-timeout"
    spec["nodes"][1]["config"].update({"timeout_s": 3, "on_timeout": "reject"})
    assert api.client.post("/workflows", json=spec).status_code == 201
    start_default_workers(workers, "t1")
    calls_before = llm.call_count
    (run_id,) = start_runs(api, "approval-timeout", ["customer 5"])
    assert api.wait(run_id, timeout=30, until=("waiting",))["status"] == "waiting"
    rec = api.wait(run_id, timeout=30)
    assert rec["status"] == "succeeded", rec["error"]
    assert rec["state"]["approval"] == {"choice": "reject", "values": {}, "by": "timeout"}
    assert llm.call_count == calls_before  # the reject branch calls nothing


def _step_of(call) -> tuple[str, str]:
    """(the run's input, the node) a call to the stand-in server was made for."""
    from tests.servers.openai_server import last_user_message

    body = call.json or {}
    if call.path.endswith("/images/generations"):
        return body.get("prompt", ""), "painter"
    text = last_user_message(body)
    if text.startswith("Classify"):
        return text.rsplit("\n", 1)[-1], "router"
    return text.rsplit("\n", 1)[-1], "writer"


def test_a_killed_fleet_resumes_within_30_s_without_beat_and_pays_nothing_twice(api, workers, llm):
    assert api.client.post("/workflows", json=triage()).status_code == 201
    start_default_workers(workers, "k1", "k2")
    llm.reset()
    llm.delay = 1.0  # steps are in flight when the fleet dies
    texts = [f"explain and draw thing {i}, both" for i in range(6)]
    ids = start_runs(api, "support-triage", texts)
    store = store_for(api.env)
    deadline = time.time() + 60
    while time.time() < deadline:  # until some steps that call the server have finished
        done = [s for r in ids for s in store.get(r)["steps"] if s["status"] == "succeeded"
                and s["node_id"] in ("router", "writer", "painter")]
        if len(done) >= 4:
            break
        time.sleep(0.1)
    workers.kill("k1")
    workers.kill("k2")
    finished_before = {(texts[ids.index(r)], s["node_id"]) for r in ids for s in store.get(r)["steps"]
                       if s["status"] == "succeeded" and s["node_id"] in ("router", "writer", "painter")}
    assert finished_before, "no step had finished before the kill"
    time.sleep(2)
    llm.delay = 0.0
    started = time.time()
    start_default_workers(workers, "k3")
    for run_id in ids:
        rec = api.wait(run_id, timeout=max(1.0, started + 30 - time.time()))
        assert rec["status"] == "succeeded", (rec["error"], workers.log("k3")[-3000:])
    assert time.time() - started <= 30
    paid: dict[tuple[str, str], int] = {}
    for call in llm.calls:
        key = _step_of(call)
        paid[key] = paid.get(key, 0) + 1
    twice = {k: n for k, n in paid.items() if k in finished_before and n > 1}
    assert not twice, f"steps paid again after the kill: {twice}"
