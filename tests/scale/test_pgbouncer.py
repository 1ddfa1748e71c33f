"""Postgres behind PgBouncer in transaction pooling mode: everything goes through it.

Started here: a fresh database, PgBouncer (pool_mode = transaction, 6 server connections
for every client) in front of it, a private redis-server, the stand-in OpenAI server,
`agentflow migrate` (alembic), `agentflow serve`, `agentflow beat` and real workers (a
driver pool and two LLM worker processes starting together, so the checkpoint tables are
set up by racing workers), all with DATABASE_URL pointing at PgBouncer and
AGENTFLOW_DB_POOLER=pgbouncer.

What transaction pooling breaks, and what this proves works: server-side prepared statements
(psycopg prepares repeated statements; the next transaction may land on another server
connection), session-level advisory locks (left on whichever server connection took them),
session settings. Nothing in AgentFlow uses LISTEN/NOTIFY.
"""

from __future__ import annotations

import subprocess
import time

import httpx
import pytest

from agentflow.workers.launch import WorkerProcesses
from tests.scale.harness import (Api, FreshDatabase, PgBouncer, agentflow, base_env, beat, plain_redis,
                                  stop_everything, token)

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(300)]

RUNS = 30


def spec() -> dict:
    return {
        "id": "pooled", "name": "Through PgBouncer", "start_node": "input",
        "nodes": [
            {"id": "input", "type": "input"},
            {"id": "writer", "type": "llm", "source": "gpt",
             "config": {"prompt": "n={metadata.n} {user_input}", "output_key": "draft", "max_tokens": 20}},
            {"id": "orders", "type": "db", "source": "shop",
             "config": {"query": "SELECT count(*) AS n FROM runs WHERE workflow_id = :wf", "params": {"wf": "pooled"},
                        "output_key": "db_result"}},
            {"id": "final", "type": "aggregator",
             "config": {"fields": ["draft", "db_result"], "output_key": "final_output"}},
        ],
        "edges": [{"from": "input", "to": "writer"}, {"from": "input", "to": "orders"},
                  {"from": "writer", "to": "final"}, {"from": "orders", "to": "final"}],
        "sources": [{"id": "gpt", "kind": "llm", "provider": "openai", "model": "gpt-4o-mini",
                     "api_key_env": "OPENAI_API_KEY", "base_url_env": "OPENAI_BASE_URL"},
                    {"id": "shop", "kind": "db", "driver": "postgresql", "dsn_env": "SHOP_DSN"}],
    }


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    from tests.servers.openai_server import OpenAIServer

    root = tmp_path_factory.mktemp("pgbouncer")
    db = FreshDatabase()
    procs = []
    workers = None
    llm = OpenAIServer().start()
    try:
        bouncer = PgBouncer(root, db)
        procs.append(bouncer)
        redis_proc, redis_url = plain_redis(root)
        procs.append(redis_proc)
        env = base_env(root / "home", DATABASE_URL=bouncer.url, REDIS_URL=redis_url, AGENTFLOW_DB_POOLER="pgbouncer",
                       SHOP_DSN=db.url, OPENAI_API_KEY="sk-test-pgbouncer-0000", OPENAI_BASE_URL=llm.base_url)
        # the migrations (alembic, under a transaction-level advisory lock) through PgBouncer
        out = subprocess.run(agentflow("migrate"), env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        workers = WorkerProcesses(env, root)
        workers.start("driver", "runs,agentflow.control", concurrency=8, pool="threads")
        workers.start("llm1", "agentflow.llm", concurrency=2)
        workers.start("llm2", "agentflow.llm", concurrency=2)
        workers.start("io", "agentflow.db", concurrency=2)
        procs.append(beat(env, root))
        api = Api("api", env, root)
        procs.append(api)
        workers.wait_ready(["driver", "llm1", "llm2", "io"])
        api.wait_healthy()
        yield bouncer, env, api, llm, workers
    finally:
        stop_everything(workers, procs, llm, db)


def test_api_workers_and_checkpoints_run_through_transaction_pooling(stack):
    bouncer, env, api, llm, workers = stack
    client = httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {token(env)}"}, timeout=30)
    assert client.post("/workflows", json=spec()).status_code == 201
    run_ids = []
    for n in range(RUNS):
        r = client.post("/workflows/pooled/runs", json={"input": {"user_input": "go", "metadata": {"n": n}}})
        assert r.status_code == 202, r.text
        run_ids.append(r.json()["run_id"])

    deadline = time.time() + 150
    records = {}
    while len(records) < len(run_ids) and time.time() < deadline:
        for run_id in run_ids:
            if run_id not in records:
                rec = client.get(f"/runs/{run_id}").json()
                if rec["status"] in ("succeeded", "failed", "cancelled"):
                    records[run_id] = rec
        time.sleep(0.5)
    assert len(records) == len(run_ids), f"runs not finished; driver log: {workers.log('driver')[-3000:]}"
    failed = {k: v["error"] for k, v in records.items() if v["status"] != "succeeded"}
    assert not failed, f"runs failed through PgBouncer: {failed}"
    for rec in records.values():
        assert {s["node_id"] for s in rec["steps"]} >= {"writer", "orders", "final"}
        assert rec["state"]["final_output"]["db_result"][0]["n"] >= 1
    assert len(llm.calls_to("/v1/chat/completions")) == RUNS

    # lists, the audit log, the dashboard: the API's reads work through the pooler too
    assert client.get("/runs", params={"limit": 100}).status_code == 200
    assert len(client.get("/workflows/pooled/runs", params={"limit": 100}).json()["items"]) == RUNS

    # it really was PgBouncer in transaction mode, sharing few server connections
    pools = [p for p in bouncer.show("POOLS") if p["database"] != "pgbouncer"]
    assert pools and all(p["pool_mode"] == "transaction" for p in pools), pools
    servers = bouncer.show("SERVERS")
    clients = bouncer.show("CLIENTS")
    assert len(servers) <= 6 < len(clients), (len(servers), len(clients))
    stats = {s["database"]: s for s in bouncer.show("STATS")}
    db_stats = next(v for k, v in stats.items() if k != "pgbouncer")
    assert db_stats["total_xact_count"] > RUNS * 5, db_stats

    for name in ("driver", "llm1", "llm2", "io"):
        log = workers.log(name)
        assert "prepared statement" not in log, f"{name}: {log[-2000:]}"
