"""Runs in flight with no worker slot held: N runs (default 10,000) of a one-`llm`-node
workflow whose queue is limited to 1 message/s, through 2 default `agentflow worker`
processes (no arguments). Shows that every run is accepted and waiting (statuses from the
store), that the waiting runs hold no slot meanwhile (`celery inspect active()`, 10 samples:
the tasks at work serve at most the one run whose step has its 1/s turn), and what one
waiting run costs: Redis bytes (INFO used_memory delta, and MEMORY USAGE of every key by
kind) and Postgres bytes (pg_total_relation_size deltas of runs, steps and the checkpoint
tables). The LLM is the stand-in server of tests/servers (never a real provider).

Anchor: an idle worker fleet (active() before anything was submitted), and the run row alone
(what the store holds for a queued run before any worker touched it).

The runs are left waiting when the bench ends: the workers are stopped and the bench's
database and Redis db are dropped (bounded in time).
"""

from __future__ import annotations

import collections
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import default_workers, fresh_env, machine  # noqa: E402

N_RUNS = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
PG_TABLES = ("runs", "steps", "checkpoints", "checkpoint_writes", "checkpoint_blobs")

SPEC = {"id": "slow-llm", "name": "One LLM step on a 1 msg/s queue", "start_node": "write",
        "nodes": [{"id": "write", "type": "llm", "source": "gpt", "queue": "slow",
                   "config": {"prompt": "Say hi to {user_input}"}}],
        "edges": [],
        "sources": [{"id": "gpt", "kind": "llm", "model": "gpt-4o-mini", "api_key_env": "OPENAI_API_KEY",
                     "base_url_env": "OPENAI_BASE_URL"}],
        "queues": [{"id": "slow", "max_messages_per_second": 1, "burst_size": 1}]}


def pg_sizes(url: str) -> dict:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        return {t: conn.execute("SELECT COALESCE(pg_total_relation_size(to_regclass(%s)), 0)", (t,)).fetchone()[0]
                for t in PG_TABLES}


def statuses(url: str) -> dict:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute("SELECT status, waiting_for IS NOT NULL AND waiting_for::text <> 'null', count(*) "
                            "FROM runs GROUP BY 1, 2").fetchall()
    out: dict = collections.Counter()
    for status, waits, count in rows:
        out[f"{status}{' (waiting for a step)' if waits and status == 'running' else ''}"] += count
    return dict(out)


def redis_keys(r) -> dict:
    """MEMORY USAGE of every key, summed by kind (the key with its run/step id taken out)."""
    import re

    kinds: dict = collections.defaultdict(lambda: [0, 0])
    pipe, names = r.pipeline(transaction=False), []
    for key in r.scan_iter(count=1000):
        names.append(key)
        pipe.memory_usage(key, samples=0)
        if len(names) % 1000 == 0:
            for k, b in zip(names[-1000:], pipe.execute()):
                kind = re.sub(r"[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}.*", "<id>",
                              k.decode(errors="replace"))
                kinds[kind][0] += 1
                kinds[kind][1] += b or 0
    rest = names[len(names) - len(names) % 1000:] if len(names) % 1000 else []
    for k, b in zip(rest, pipe.execute() if rest else []):
        kind = re.sub(r"[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}.*", "<id>",
                      k.decode(errors="replace"))
        kinds[kind][0] += 1
        kinds[kind][1] += b or 0
    return {k: {"keys": v[0], "bytes": v[1]} for k, v in sorted(kinds.items(), key=lambda kv: -kv[1][1])}


def active_tasks(app) -> int:
    replies = app.control.inspect(timeout=2.0).active() or {}
    return sum(len(v) for v in replies.values())


def runs_in_slots(app) -> tuple[int, int]:
    """(active tasks, distinct runs they serve): the queue lets one step go a second, so the
    run whose step has its turn holds a slot or two (its node task, then its driver) for a
    moment; a waiting run holds none."""
    replies = app.control.inspect(timeout=2.0).active() or {}
    tasks = [t for v in replies.values() for t in v]
    runs = {(t.get("args") or [None])[0] for t in tasks if t.get("name") in ("agentflow.run", "agentflow.node")}
    return len(tasks), len(runs)


def main(n: int = N_RUNS, workers: int = 2, settle_timeout: float = 420.0) -> dict:
    import redis

    from agentflow.store.db import session_factory
    from agentflow.store.runs import RunStore
    from agentflow.workers.app import make_celery
    from tests.servers.openai_server import OpenAIServer

    with OpenAIServer() as llm, fresh_env(redis_db=12) as env:
        env.update({"OPENAI_API_KEY": "sk-bench-waiting-0000", "OPENAI_BASE_URL": llm.base_url})
        url = env["DATABASE_URL"].replace("postgresql+psycopg://", "postgresql://")
        r = redis.Redis.from_url(env["REDIS_URL"])
        app = make_celery(env["REDIS_URL"])
        store = RunStore(session_factory(env["DATABASE_URL"]))
        with default_workers(env, workers) as _pgids:
            store.create(SPEC, {"user_input": "warm"}, workflow_id=SPEC["id"])  # tables exist, checkpointer set up
            time.sleep(1)
            idle_active = active_tasks(app)
            r_mem0, pg0 = r.info("memory")["used_memory"], pg_sizes(url)

            t0 = time.perf_counter()
            ids = []
            with app.producer_or_acquire() as producer:
                for i in range(n):
                    rid = store.create(SPEC, {"user_input": f"user {i}"}, workflow_id=SPEC["id"])
                    ids.append(rid)
                    app.send_task("agentflow.run", args=[rid], task_id=rid, queue="runs", producer=producer)
            submit_s = time.perf_counter() - t0
            pg_rows = pg_sizes(url)  # the run rows alone, before most drivers touched them
            print(f"  submitted {n:,} runs in {submit_s:.1f} s ({n / submit_s:.0f}/s)", flush=True)

            # until every run is accepted and waiting (or done: 1/s of them finish)
            samples = []
            deadline = time.perf_counter() + settle_timeout
            while True:
                st = statuses(url)
                queued = st.get("queued", 0)
                in_queue = r.llen("runs") + r.llen("agentflow.llm")
                samples.append({"t": round(time.perf_counter() - t0, 1), "statuses": st, "broker_queued": in_queue})
                if queued == 0 and in_queue == 0:
                    break
                if time.perf_counter() > deadline:
                    break
                time.sleep(5)
            settle_s = time.perf_counter() - t0
            time.sleep(2)
            st = statuses(url)
            samples = []
            for _ in range(10):
                samples.append(runs_in_slots(app))
                time.sleep(0.5)
            actives = [a for a, _ in samples]
            runs_active = [r_ for _, r_ in samples]
            delayed = r.zcard("af:delayed")
            r_mem1, pg1 = r.info("memory")["used_memory"], pg_sizes(url)
            kinds = redis_keys(r)
            finished = st.get("succeeded", 0)
            waiting = sum(v for k, v in st.items() if k.startswith("running") or k == "waiting")
    per_run_pg = {t: (pg1[t] - pg0[t]) / n for t in PG_TABLES}
    row_only = {t: (pg_rows[t] - pg0[t]) / n for t in PG_TABLES}
    result = {
        "n": n, "workers": workers, "submit_s": submit_s, "settle_s": settle_s, "statuses": st,
        "waiting": waiting, "finished": finished, "delayed_messages": delayed,
        "active_idle": idle_active, "active_while_waiting": actives, "runs_in_slots": runs_active,
        "redis_bytes_per_run": (r_mem1 - r_mem0) / n, "redis_keys": kinds,
        "pg_bytes_per_run": per_run_pg, "pg_total_per_run": sum(per_run_pg.values()),
        "pg_row_only_per_run": sum(row_only.values()), "samples": samples[-6:],
    }
    print(f"waiting runs: {n:,} runs of a one-llm-node workflow on a 1 msg/s queue, {workers} default workers "
          f"({machine()})")
    print(f"  accepted and waiting after {settle_s:.0f} s: {st}")
    print(f"  delayed node messages in Redis (af:delayed): {delayed:,}")
    print(f"  active tasks on the workers: idle fleet {idle_active}, while {waiting:,} runs wait {actives}")
    print(f"  Redis bytes per waiting run (used_memory delta): {result['redis_bytes_per_run']:,.0f}")
    for k, v in list(kinds.items())[:8]:
        print(f"    {k}: {v['keys']:,} keys, {v['bytes']:,} B ({v['bytes'] / n:,.0f} B/run)")
    print(f"  Postgres bytes per waiting run: {result['pg_total_per_run']:,.0f} "
          f"({', '.join(f'{t} {b:,.0f}' for t, b in per_run_pg.items())}); the queued run row alone "
          f"{result['pg_row_only_per_run']:,.0f}")
    return result


if __name__ == "__main__":
    main()
