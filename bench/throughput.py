"""Distributed throughput: runs/s and submit-to-finish latency of a 4-node workflow with
instant nodes on 2 workers, next to raw Celery throughput of a no-op chain of the same
length on the same broker, measured in the same run. Target: ratio >= 0.5x.

The workflow is input -> db (SQLite `SELECT 1`) -> db -> aggregator: two steps go
through node queues (agentflow.db), two run inside the driver, as in real workflows.
"""

from __future__ import annotations

import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import fresh_env, machine, pct, workers  # noqa: E402

N_RUNS = int(sys.argv[1]) if len(sys.argv) > 1 else 200
DRIVER_THREADS = 8


def spec() -> dict:
    q = {"query": "SELECT 1 AS one", "max_rows": 1}
    return {"id": "bench-4", "name": "bench", "start_node": "a",
            "nodes": [{"id": "a", "type": "input"},
                      {"id": "b", "type": "db", "source": "lite", "config": {**q, "output_key": "db_result"}},
                      {"id": "c", "type": "db", "source": "lite", "config": {**q, "output_key": "api_result"}},
                      {"id": "d", "type": "aggregator", "config": {"fields": ["db_result", "api_result"]}}],
            "edges": [{"from": "a", "to": "b"}, {"from": "b", "to": "c"}, {"from": "c", "to": "d"}],
            "sources": [{"id": "lite", "kind": "db", "driver": "sqlite", "dsn_env": "BENCH_DSN"}]}


def bench_runs(env: dict, n: int) -> dict:
    from agentflow.store.db import session_factory
    from agentflow.store.runs import RunStore
    from agentflow.workers.app import make_celery

    app = make_celery(env["REDIS_URL"])
    store = RunStore(session_factory(env["DATABASE_URL"]))
    s = spec()
    submitted = {}
    t0 = time.perf_counter()
    for _ in range(n):
        run_id = store.create(s, {"user_input": "x"}, workflow_id=s["id"])
        submitted[run_id] = time.time()
        app.send_task("agentflow.run", args=[run_id], task_id=run_id, queue="runs")
    from sqlalchemy import select

    from agentflow.store.models import Run

    done: dict[str, float] = {}
    while len(done) < n and time.perf_counter() - t0 < 600:
        with store.factory() as sess:
            rows = sess.execute(select(Run.id, Run.status, Run.finished_at).where(
                Run.status.in_(("succeeded", "failed")))).all()
        for rid, status, fin in rows:
            if rid not in done:
                if status != "succeeded":
                    rec = store.get(rid)
                    raise RuntimeError(f"bench run {rid} {status}: {rec['error']}")
                done[rid] = fin.timestamp()
        time.sleep(0.05)
    elapsed = max(done.values()) - min(submitted.values())
    lat = [done[r] - submitted[r] for r in done]
    return {"per_s": n / elapsed, "p50": pct(lat, 50), "p99": pct(lat, 99)}


def bench_chain(env: dict, n: int) -> dict:
    from celery import chain

    from agentflow.workers.app import make_celery

    app = make_celery(env["REDIS_URL"])
    noop = app.signature("agentflow.noop", queue="runs")
    t0 = time.perf_counter()
    starts, results = [], []
    for _ in range(n):
        starts.append(time.perf_counter())
        results.append(chain(*(noop.clone(immutable=True) for _ in range(4))).apply_async())
    lat = []
    for st, r in zip(starts, results):
        r.get(timeout=300)
        lat.append(time.perf_counter() - st)
    elapsed = time.perf_counter() - t0
    return {"per_s": n / elapsed, "p50": pct(lat, 50), "p99": pct(lat, 99)}


def main(n: int = N_RUNS) -> dict:
    db = Path(tempfile.mkdtemp()) / "bench.db"
    sqlite3.connect(db).close()
    with fresh_env(redis_db=11) as env:
        env["BENCH_DSN"] = f"sqlite:///{db}"
        # drivers mostly wait on node tasks, so they run in a thread pool (as `make up` does)
        with workers(env, [("driver", "runs,agentflow.control", DRIVER_THREADS, "threads"),
                           ("nodes", "agentflow.db,agentflow.api,agentflow.llm,agentflow.image", 2)]):
            bench_chain(env, 20)  # warm-up
            chain = bench_chain(env, n)
            runs = bench_runs(env, n)
    ratio = runs["per_s"] / chain["per_s"]
    print(f"throughput, {n} runs of a 4-node workflow (instant nodes), 2 workers x concurrency 2 ({machine()})")
    print(f"  raw Celery 4-task no-op chain : {chain['per_s']:.1f}/s  p50 {chain['p50']*1000:.0f} ms  p99 {chain['p99']*1000:.0f} ms")
    print(f"  AgentFlow runs                : {runs['per_s']:.1f}/s  p50 {runs['p50']*1000:.0f} ms  p99 {runs['p99']*1000:.0f} ms")
    print(f"  ratio runs/chain              : {ratio:.2f}x   (target >= 0.5x)")
    return {"chain": chain, "runs": runs, "ratio": ratio}


if __name__ == "__main__":
    main()
