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
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import fresh_env, machine, pct, workers  # noqa: E402

N_RUNS = int(sys.argv[1]) if len(sys.argv) > 1 else 200
DRIVER_THREADS = 8
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 3


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
    since = datetime.now(timezone.utc) - timedelta(seconds=5)
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
                Run.status.in_(("succeeded", "failed")), Run.created_at >= since)).all()
        for rid, status, fin in rows:
            if rid in submitted and rid not in done:  # earlier rounds' runs are in the table too
                if status != "succeeded":
                    rec = store.get(rid)
                    raise RuntimeError(f"bench run {rid} {status}: {rec['error']}")
                done[rid] = fin.timestamp()
        time.sleep(0.05)
    elapsed = max(done.values()) - min(submitted.values())
    lat = [done[r] - submitted[r] for r in done]
    return {"per_s": n / elapsed, "p50": pct(lat, 50), "p99": pct(lat, 99)}


def bench_chain(env: dict, n: int) -> dict:
    """Send n chains, then poll their last results in one MGET per 50 ms (as bench_runs polls
    the store), each finish time being the result's own date_done. Waiting on each result's
    pub/sub message instead hung, now and then, on one that never came."""
    import json

    from celery import chain

    from agentflow.workers.app import make_celery

    app = make_celery(env["REDIS_URL"])
    noop = app.signature("agentflow.noop", queue="runs")
    submitted: dict[str, float] = {}
    for _ in range(n):
        t = time.time()
        submitted[chain(*(noop.clone(immutable=True) for _ in range(4))).apply_async().id] = t
    client, done = app.backend.client, {}
    deadline = time.perf_counter() + 600
    while len(done) < n and time.perf_counter() < deadline:
        pending = [k for k in submitted if k not in done]
        for key, raw in zip(pending, client.mget([app.backend.get_key_for_task(k) for k in pending])):
            if raw is not None:
                meta = json.loads(raw)
                if meta["status"] == "SUCCESS":
                    done[key] = datetime.fromisoformat(meta["date_done"]).replace(tzinfo=timezone.utc).timestamp()
        time.sleep(0.05)
    if len(done) < n:
        raise RuntimeError(f"{n - len(done)} of {n} chains did not finish")
    elapsed = max(done.values()) - min(submitted.values())
    lat = [done[k] - submitted[k] for k in done]
    return {"per_s": n / elapsed, "p50": pct(lat, 50), "p99": pct(lat, 99)}


def main(n: int = N_RUNS, rounds: int = ROUNDS) -> dict:
    db = Path(tempfile.mkdtemp()) / "bench.db"
    sqlite3.connect(db).close()
    chains, runs_ = [], []
    with fresh_env(redis_db=11) as env:
        env["BENCH_DSN"] = f"sqlite:///{db}"
        # drivers mostly wait on node tasks, so they run in a thread pool (as `make up` does)
        with workers(env, [("driver", "runs,agentflow.control", DRIVER_THREADS, "threads"),
                           ("nodes", "agentflow.db,agentflow.api,agentflow.llm,agentflow.image", 2)]):
            bench_chain(env, 20)  # warm-up
            bench_runs(env, 20)
            # alternate rounds: this machine's speed drifts (shared cores), and the ratio
            # must compare runs and chains measured under the same conditions
            for _ in range(rounds):
                chains.append(bench_chain(env, n))
                runs_.append(bench_runs(env, n))
    by_ratio = sorted(zip(runs_, chains), key=lambda rc: rc[0]["per_s"] / rc[1]["per_s"])
    ratios = [r["per_s"] / c["per_s"] for r, c in by_ratio]
    runs, chain = by_ratio[len(by_ratio) // 2]  # the round with the median ratio
    ratio = runs["per_s"] / chain["per_s"]
    print(f"throughput, {rounds} alternating rounds of {n} runs of a 4-node workflow (instant nodes), "
          f"2 workers x concurrency 2 ({machine()})")
    print(f"  raw Celery 4-task no-op chain : {chain['per_s']:.1f}/s  p50 {chain['p50']*1000:.0f} ms  p99 {chain['p99']*1000:.0f} ms  (median round)")
    print(f"  AgentFlow runs                : {runs['per_s']:.1f}/s  p50 {runs['p50']*1000:.0f} ms  p99 {runs['p99']*1000:.0f} ms  (median round)")
    print(f"  ratio runs/chain per round    : {', '.join(f'{r:.2f}' for r in ratios)}")
    print(f"  ratio runs/chain (median)     : {ratio:.2f}x   (target >= 0.5x)")
    return {"chain": chain, "runs": runs, "ratio": ratio, "ratios": ratios}


if __name__ == "__main__":
    main()
