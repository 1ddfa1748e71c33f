"""Distributed throughput: runs/s of a 4-node workflow with instant nodes through 2 default
`agentflow worker` processes (no arguments: every queue, prefork x 2), next to a raw Celery
chain that sends the SAME number of messages, on the SAME queues, through the SAME worker
processes, each of its tasks doing one Redis SET and one Postgres INSERT of a step-row-sized
payload. Target: ratio >= 0.9x.

The workflow is input -> db (SQLite `SELECT 1`) -> db -> aggregator: two steps go to the
`agentflow.db` queue, two run inside the driver. The runtime is event-driven, so one run
costs a driver message, then per remote node one node-task message and one wake (driver)
message. The bench does not take that from the docs: it counts the messages our runs really
published (LPUSH calls on the private Redis, kombu's publish) in a warm-up round, and the
anchor chain has exactly that many tasks, alternating `runs` and `agentflow.db` as ours do.

Where the time goes: each round records the CPU seconds of every worker process (main and
pool children, from /proc) and of Redis (INFO cpu), and a last round of our runs alone
records Postgres writes (pg_stat_database) and bytes (relation sizes) per run: the
"per-run costs" table in RESULTS.md.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import default_workers, fresh_env, machine, pct  # noqa: E402

N_RUNS = int(sys.argv[1]) if len(sys.argv) > 1 else 200
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 3
WORKERS = 2
CLK = os.sysconf("SC_CLK_TCK")


def spec() -> dict:
    q = {"query": "SELECT 1 AS one", "max_rows": 1}
    return {"id": "bench-4", "name": "bench", "start_node": "a",
            "nodes": [{"id": "a", "type": "input"},
                      {"id": "b", "type": "db", "source": "lite", "config": {**q, "output_key": "db_result"}},
                      {"id": "c", "type": "db", "source": "lite", "config": {**q, "output_key": "api_result"}},
                      {"id": "d", "type": "aggregator", "config": {"fields": ["db_result", "api_result"]}}],
            "edges": [{"from": "a", "to": "b"}, {"from": "b", "to": "c"}, {"from": "c", "to": "d"}],
            "sources": [{"id": "lite", "kind": "db", "driver": "sqlite", "dsn_env": "BENCH_DSN"}]}


# ---------------------------------------------------------------- meters


def group_cpu(pgids: set[int]) -> dict[int, float]:
    """CPU seconds (user + system) of every live process in the given process groups."""
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            fields = Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) in pgids:  # field 5 (pgrp), after the name
            out[int(d)] = (int(fields[11]) + int(fields[12])) / CLK  # utime, stime
    return out


class Meter:
    """Deltas over one round: worker CPU, Redis CPU and commands."""

    def __init__(self, env: dict, pgids: set[int]):
        import redis

        self.r = redis.Redis.from_url(env["REDIS_URL"])
        self.pgids = pgids
        self.db_url = env["DATABASE_URL"].replace("postgresql+psycopg://", "postgresql://")

    def pg_backend_cpu(self) -> dict[int, float]:
        """CPU seconds of the Postgres backends serving the bench database (local server)."""
        import psycopg

        with psycopg.connect(self.db_url, autocommit=True) as conn:
            pids = [r[0] for r in conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                                               "AND pid <> pg_backend_pid()")]
        out = {}
        for pid in pids:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            out[pid] = (int(fields[11]) + int(fields[12])) / CLK
        return out

    def snap(self) -> dict:
        info = self.r.info("all")
        cmds = {k[len("cmdstat_"):]: v["calls"] for k, v in info.items() if k.startswith("cmdstat_")}
        return {"cpu": group_cpu(self.pgids), "redis_cpu": info["used_cpu_user"] + info["used_cpu_sys"], "cmds": cmds,
                "pg_cpu": self.pg_backend_cpu()}

    @staticmethod
    def delta(a: dict, b: dict) -> dict:
        cpu = sum(b["cpu"].get(p, 0) - a["cpu"].get(p, 0) for p in b["cpu"])
        cmds = {k: v - a["cmds"].get(k, 0) for k, v in b["cmds"].items() if v - a["cmds"].get(k, 0)}
        pg = sum(v - a["pg_cpu"].get(p, 0) for p, v in b["pg_cpu"].items())
        return {"worker_cpu_s": cpu, "redis_cpu_s": b["redis_cpu"] - a["redis_cpu"], "cmds": cmds, "pg_cpu_s": pg,
                "per_process_cpu_s": {p: b["cpu"][p] - a["cpu"].get(p, 0) for p in b["cpu"]}}


# ---------------------------------------------------------------- our runs


def bench_runs(env: dict, n: int, meter: Meter) -> dict:
    from sqlalchemy import select

    from agentflow.store.db import session_factory
    from agentflow.store.models import Run
    from agentflow.store.runs import RunStore
    from agentflow.workers.app import make_celery

    app = make_celery(env["REDIS_URL"])
    store = RunStore(session_factory(env["DATABASE_URL"]))
    s = spec()
    run_ids = [store.create(s, {"user_input": "x"}, workflow_id=s["id"]) for _ in range(n)]  # rows first, as the API
    since = datetime.now(timezone.utc) - timedelta(seconds=5)
    before = meter.snap()
    submitted = {}
    with app.producer_or_acquire() as producer:
        for run_id in run_ids:
            submitted[run_id] = time.time()
            app.send_task("agentflow.run", args=[run_id], task_id=run_id, queue="runs", producer=producer)
    t0 = time.perf_counter()
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
    if len(done) < n:
        raise RuntimeError(f"{n - len(done)} of {n} runs did not finish")
    time.sleep(0.3)  # the last wake's result write
    used = Meter.delta(before, meter.snap())
    elapsed = max(done.values()) - min(submitted.values())
    lat = [done[r] - submitted[r] for r in done]
    return {"per_s": n / elapsed, "p50": pct(lat, 50), "p99": pct(lat, 99), "n": n, **used}


# ---------------------------------------------------------------- the anchor chain


def anchor_queues(messages: int) -> list[str]:
    """Our message sequence: driver, then (node task, wake) per remote node."""
    return ["runs" if i % 2 == 0 else "agentflow.db" for i in range(messages)]


def bench_chain(env: dict, n: int, messages: int, payload: str, meter: Meter) -> dict:
    """Send n chains of `messages` tasks, then poll their last results in one MGET per 50 ms
    (as bench_runs polls the store), each finish time being the result's own date_done."""
    import json
    import uuid

    from celery import chain

    from agentflow.workers.app import make_celery

    app = make_celery(env["REDIS_URL"])
    queues = anchor_queues(messages)
    before = meter.snap()
    submitted: dict[str, float] = {}
    with app.producer_or_acquire() as producer:
        for _ in range(n):
            t = time.time()
            key = uuid.uuid4().hex
            # no Celery result but the last one's, as our tasks store none (the run row says it ended)
            c = chain(*(app.signature("agentflow.bench_step", args=[f"{key}:{i}", payload], queue=q, immutable=True,
                                      ignore_result=i < len(queues) - 1)
                        for i, q in enumerate(queues)))
            submitted[c.apply_async(producer=producer).id] = t
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
    used = Meter.delta(before, meter.snap())
    elapsed = max(done.values()) - min(submitted.values())
    lat = [done[k] - submitted[k] for k in done]
    return {"per_s": n / elapsed, "p50": pct(lat, 50), "p99": pct(lat, 99), "n": n, **used}


# ---------------------------------------------------------------- Postgres per run


PG_TABLES = ("runs", "steps", "checkpoints", "checkpoint_writes", "checkpoint_blobs")


def pg_snapshot(db_url: str) -> dict:
    import psycopg

    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute("SELECT xact_commit, tup_inserted, tup_updated, tup_deleted FROM pg_stat_database "
                           "WHERE datname = current_database()").fetchone()
        sizes = {t: conn.execute("SELECT COALESCE(pg_total_relation_size(to_regclass(%s)), 0)", (t,)).fetchone()[0]
                 for t in PG_TABLES}
    return {"commits": row[0], "inserted": row[1], "updated": row[2], "deleted": row[3], "sizes": sizes}


def step_row_bytes(db_url: str) -> int:
    import psycopg

    with psycopg.connect(db_url) as conn:
        return int(conn.execute("SELECT COALESCE(avg(pg_column_size(s.*)), 200) FROM steps s").fetchone()[0])


def create_anchor_table(db_url: str) -> None:
    import psycopg

    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS bench_anchor (id bigserial PRIMARY KEY, key text NOT NULL, "
                     "payload text NOT NULL, created_at timestamptz NOT NULL DEFAULT now())")


def costs_round(env: dict, n: int, meter: Meter, pgids: set[int]) -> dict:
    """Our runs alone, with Postgres activity: pg_stat_database is flushed by an idle backend
    at most every 10 s, hence the waits around the round."""
    url = env["DATABASE_URL"].replace("postgresql+psycopg://", "postgresql://")
    time.sleep(11)
    pg0 = pg_snapshot(url)
    r = bench_runs(env, n, meter)
    time.sleep(11)
    pg1 = pg_snapshot(url)
    per = {k: (pg1[k] - pg0[k]) / n for k in ("commits", "inserted", "updated", "deleted")}
    per["bytes"] = {t: (pg1["sizes"][t] - pg0["sizes"][t]) / n for t in PG_TABLES}
    r["pg_per_run"] = per
    return r


# ---------------------------------------------------------------- main


def main(n: int = N_RUNS, rounds: int = ROUNDS) -> dict:
    db = Path(tempfile.mkdtemp()) / "bench.db"
    sqlite3.connect(db).close()
    chains, runs_ = [], []
    with fresh_env(redis_db=11) as env:
        env["BENCH_DSN"] = f"sqlite:///{db}"
        create_anchor_table(env["DATABASE_URL"].replace("postgresql+psycopg://", "postgresql://"))
        with default_workers(env, WORKERS) as pgids:
            meter = Meter(env, pgids)
            warm = bench_runs(env, 20, meter)
            # messages one run publishes (kombu's LPUSH), counted, not assumed
            messages = round(warm["cmds"].get("lpush", 0) / 20)
            payload = "x" * step_row_bytes(env["DATABASE_URL"].replace("postgresql+psycopg://", "postgresql://"))
            warm_chain = bench_chain(env, 20, messages, payload, meter)
            chain_messages = warm_chain["cmds"].get("lpush", 0) / 20
            # alternate rounds: this machine's speed drifts (shared cores), and the ratio
            # must compare runs and chains measured under the same conditions
            for i in range(rounds):
                if i % 2 == 0:
                    chains.append(bench_chain(env, n, messages, payload, meter))
                    runs_.append(bench_runs(env, n, meter))
                else:
                    runs_.append(bench_runs(env, n, meter))
                    chains.append(bench_chain(env, n, messages, payload, meter))
            costs = costs_round(env, n, meter, pgids)
    by_ratio = sorted(zip(runs_, chains), key=lambda rc: rc[0]["per_s"] / rc[1]["per_s"])
    ratios = [r["per_s"] / c["per_s"] for r, c in by_ratio]
    runs, chain = by_ratio[len(by_ratio) // 2]  # the round with the median ratio
    ratio = runs["per_s"] / chain["per_s"]
    per_run = {
        "messages": messages, "anchor_messages": chain_messages, "payload_bytes": len(payload),
        "worker_cpu_ms": 1000 * runs["worker_cpu_s"] / n, "anchor_worker_cpu_ms": 1000 * chain["worker_cpu_s"] / n,
        "redis_cpu_ms": 1000 * runs["redis_cpu_s"] / n, "anchor_redis_cpu_ms": 1000 * chain["redis_cpu_s"] / n,
        "pg_cpu_ms": 1000 * runs["pg_cpu_s"] / n, "anchor_pg_cpu_ms": 1000 * chain["pg_cpu_s"] / n,
        "redis_ops": sum(runs["cmds"].values()) / n, "anchor_redis_ops": sum(chain["cmds"].values()) / n,
        "redis_top": sorted(((k, v / n) for k, v in runs["cmds"].items()), key=lambda kv: -kv[1])[:8],
        "anchor_redis_top": sorted(((k, v / n) for k, v in chain["cmds"].items()), key=lambda kv: -kv[1])[:8],
        "pg": costs["pg_per_run"],
    }
    print(f"throughput, {rounds} alternating rounds of {n} runs of a 4-node workflow (instant nodes), "
          f"{WORKERS} default `agentflow worker` processes ({machine()})")
    print(f"  messages per run (counted)    : {messages}  (anchor chain: {chain_messages:.1f} per chain, "
          f"queues {' -> '.join(anchor_queues(messages))})")
    print(f"  anchor chain, SET+INSERT {len(payload)} B : {chain['per_s']:.1f}/s  p50 {chain['p50']*1000:.0f} ms  "
          f"p99 {chain['p99']*1000:.0f} ms  (median round)")
    print(f"  AgentFlow runs                : {runs['per_s']:.1f}/s  p50 {runs['p50']*1000:.0f} ms  "
          f"p99 {runs['p99']*1000:.0f} ms  (median round)")
    print(f"  ratio runs/chain per round    : {', '.join(f'{r:.2f}' for r in ratios)}")
    print(f"  ratio runs/chain (median)     : {ratio:.2f}x   (target >= 0.9x)")
    print(f"  worker CPU per run / chain    : {per_run['worker_cpu_ms']:.1f} / {per_run['anchor_worker_cpu_ms']:.1f} ms")
    print(f"  Redis CPU per run / chain     : {per_run['redis_cpu_ms']:.2f} / {per_run['anchor_redis_cpu_ms']:.2f} ms")
    print(f"  Postgres CPU per run / chain  : {per_run['pg_cpu_ms']:.2f} / {per_run['anchor_pg_cpu_ms']:.2f} ms")
    print(f"  Redis commands per run / chain: {per_run['redis_ops']:.1f} / {per_run['anchor_redis_ops']:.1f}")
    print(f"    ours  : {', '.join(f'{k} {v:.1f}' for k, v in per_run['redis_top'])}")
    print(f"    anchor: {', '.join(f'{k} {v:.1f}' for k, v in per_run['anchor_redis_top'])}")
    pg = per_run["pg"]
    print(f"  Postgres per run (ours alone) : {pg['commits']:.1f} commits, {pg['inserted']:.1f} rows inserted, "
          f"{pg['updated']:.1f} updated, {pg['deleted']:.1f} deleted; bytes "
          + ", ".join(f"{t} {b:,.0f}" for t, b in pg["bytes"].items()))
    for r in (runs, chain):
        r.pop("per_process_cpu_s", None)
    return {"chain": chain, "runs": runs, "ratio": ratio, "ratios": ratios, "per_run": per_run,
            "costs_round": {k: v for k, v in costs.items() if k != "per_process_cpu_s"}}


if __name__ == "__main__":
    main()
