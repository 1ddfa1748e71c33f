"""Scale: reads stay fast with 100,000 stored workflows and 1,000,000 stored steps.

    .venv/bin/python bench/scale.py [--workflows 100000] [--steps 1000000] [--samples 200]

A fresh PostgreSQL database is filled with COPY: N workflows (each with one version), one
run per workflow (every run with steps/N steps) - so N runs and `steps` steps. Then, through
the API (the real FastAPI app in-process, embedded mode on that database; each request is
a full HTTP request through TestClient), the median and p95 of:

    GET /workflows?limit=50                 the first page
    GET /workflows?limit=50&cursor=...      a page half-way down (cursor pagination)
    GET /workflows/{id}                     a random workflow with its current spec
    GET /runs/{id}                          a random run with its steps
    GET /runs?limit=50&cursor=...           runs, half-way down
    GET /workflows/{id}/runs                one workflow's runs

Target: every one under 50 ms. Anchor: a bare `SELECT 1` round trip through the same
SQLAlchemy engine, measured in the same run; each figure is also given as a ratio to it.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import PG, machine, pct  # noqa: E402

TARGET_MS = 50.0


def small_spec(wf_id: str) -> dict:
    return {"id": wf_id, "name": f"workflow {wf_id}", "start_node": "input",
            "nodes": [{"id": "input", "type": "input"},
                      {"id": "route", "type": "router", "config": {"mode": "rules", "rules": [
                          {"condition": "metadata.tier == 'paid'", "value": "priority"}], "default": "normal"}},
                      {"id": "final", "type": "aggregator", "config": {"fields": ["intent", "user_input"]}}],
            "edges": [{"from": "input", "to": "route"}, {"from": "route", "to": "final"}]}


def load(url: str, n_workflows: int, n_steps: int) -> dict:
    """COPY the rows in; returns counts and seconds."""
    import psycopg

    steps_per_run = max(1, n_steps // n_workflows)
    now = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    run_ids: list[str] = []
    template = json.dumps(small_spec("@ID@"))
    with psycopg.connect(url) as conn:
        with conn.cursor() as cur:
            with cur.copy("COPY workflows (tenant_id, id, name, description, current_version, created_at, "
                          "updated_at) FROM STDIN") as cp:
                for i in range(n_workflows):
                    at = now - timedelta(seconds=n_workflows - i)
                    cp.write_row(("default", f"wf-{i:07d}", f"workflow {i}", "bench workflow", 1, at, at))
            with cur.copy("COPY workflow_versions (tenant_id, workflow_id, version, spec, spec_hash, created_at) "
                          "FROM STDIN") as cp:
                for i in range(n_workflows):
                    wf = f"wf-{i:07d}"
                    cp.write_row(("default", wf, 1, template.replace("@ID@", wf), f"{i:064x}",
                                  now - timedelta(seconds=n_workflows - i)))
            with cur.copy("COPY runs (id, tenant_id, workflow_id, workflow_version, spec, status, input, state, "
                          "error, tokens_used, cost, attempts, cancel_requested, created_at, started_at, "
                          "finished_at, heartbeat_at) FROM STDIN") as cp:
                for i in range(n_workflows):
                    rid = str(uuid.UUID(int=random.getrandbits(128), version=4))
                    run_ids.append(rid)
                    wf = f"wf-{i:07d}"
                    at = now - timedelta(seconds=n_workflows - i)
                    cp.write_row((rid, "default", wf, 1, template.replace("@ID@", wf), "succeeded",
                                  '{"user_input": "hello", "metadata": {"tier": "paid"}}',
                                  '{"intent": "priority", "final_output": {"intent": "priority"}}',
                                  None, 42, 0.0021, 1, False, at, at, at + timedelta(seconds=2), at))
            n_written = 0
            with cur.copy("COPY steps (run_id, tenant_id, node_id, node_type, status, attempt, queue, worker, "
                          "started_at, finished_at, duration_ms, tokens, cost, error, output, step_key) "
                          "FROM STDIN") as cp:
                for i, rid in enumerate(run_ids):
                    at = now - timedelta(seconds=n_workflows - i)
                    for k in range(steps_per_run):
                        node = ("input", "route", "final")[k % 3] if k < 3 else f"extra{k}"
                        cp.write_row((rid, "default", node, "router", "succeeded", 1, "runs", "driver@bench",
                                      at, at + timedelta(milliseconds=5), 5.0, 3, 0.0001, None,
                                      '{"intent": "priority"}', f"{rid}:{node}:{k}"))
                        n_written += 1
        conn.commit()
        conn.autocommit = True
        conn.execute("ANALYZE")
    return {"seconds": time.perf_counter() - t0, "workflows": n_workflows, "runs": len(run_ids),
            "steps": n_written, "run_ids": run_ids}


def timed(fn, samples: int) -> list[float]:
    out = []
    for _ in range(samples):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def summary(ms: list[float]) -> dict:
    return {"median_ms": statistics.median(ms), "p95_ms": pct(ms, 95), "n": len(ms)}


def explain(url: str, wf_key: tuple, run_key: tuple) -> dict[str, str]:
    """EXPLAIN ANALYZE of the queries behind the list pages (the same SQL the store runs):
    the scan each one does, and how many rows it read only to throw away."""
    import psycopg

    queries = {
        "workflows, first page": ("SELECT * FROM workflows WHERE tenant_id = 'default' "
                                  "ORDER BY updated_at DESC, id DESC LIMIT 51", ()),
        "workflows, page half-way down": ("SELECT * FROM workflows WHERE tenant_id = 'default' AND "
                                          "(updated_at, id) < (%s, %s) ORDER BY updated_at DESC, id DESC LIMIT 51",
                                          wf_key),
        "runs, page half-way down": ("SELECT id FROM runs WHERE tenant_id = 'default' AND (created_at, id) < (%s, %s) "
                                     "ORDER BY created_at DESC, id DESC LIMIT 51", run_key),
        "a run's steps": ("SELECT * FROM steps WHERE run_id = %s ORDER BY id", (run_key[1],)),
    }
    out = {}
    with psycopg.connect(url) as conn:
        for name, (sql, params) in queries.items():
            plan = conn.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, params).fetchone()[0][0]

            def scans(node):
                if "Scan" in node["Node Type"]:
                    yield node
                for child in node.get("Plans", []):
                    yield from scans(child)

            parts = [f"{n['Node Type']}" + (f" on {n['Index Name']}" if n.get("Index Name") else "")
                     + f", {n.get('Actual Rows', 0)} rows, {n.get('Rows Removed by Filter', 0)} filtered out"
                     for n in scans(plan["Plan"])]
            out[name] = "; ".join(parts) + f" ({plan['Execution Time']:.2f} ms)"
    return out


def main(workflows: int = 100_000, steps: int = 1_000_000, samples: int = 200) -> dict:
    import psycopg
    from sqlalchemy import select, text

    name = "af_scale_" + uuid.uuid4().hex[:8]
    with psycopg.connect(PG, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = PG.rsplit("/", 1)[0] + "/" + name
    home = tempfile.mkdtemp(prefix="af-scale-")
    saved = {k: os.environ.get(k) for k in ("DATABASE_URL", "REDIS_URL", "AGENTFLOW_HOME", "AGENTFLOW_AUTH",
                                             "AGENTFLOW_LOAD_EXAMPLES", "AGENTFLOW_RATE_IP_PER_MINUTE",
                                             "AGENTFLOW_RATE_TENANT_PER_MINUTE")}
    try:
        from agentflow.store.db import get_engine, migrate

        migrate(url)
        loaded = load(url, workflows, steps)
        print(f"scale: loaded {loaded['workflows']:,} workflows, {loaded['runs']:,} runs, {loaded['steps']:,} steps "
              f"in {loaded['seconds']:.0f} s")

        os.environ.update(DATABASE_URL=url, AGENTFLOW_HOME=home, AGENTFLOW_AUTH="off", AGENTFLOW_LOAD_EXAMPLES="0",
                          AGENTFLOW_RATE_IP_PER_MINUTE="0", AGENTFLOW_RATE_TENANT_PER_MINUTE="0")
        os.environ.pop("REDIS_URL", None)
        from fastapi.testclient import TestClient

        from agentflow.api.main import create_app
        from agentflow.api.pagination import encode
        from agentflow.settings import Settings
        from agentflow.store.models import Workflow

        engine = get_engine(url)

        def select1():
            with engine.connect() as c:
                c.execute(text("SELECT 1"))

        # a cursor half-way down the list, as the API would hand it out
        with engine.connect() as c:
            mid = c.execute(select(Workflow.updated_at, Workflow.id).order_by(Workflow.updated_at.desc(),
                                                                              Workflow.id.desc())
                            .offset(workflows // 2).limit(1)).one()
            mid_run_key = tuple(c.execute(text("SELECT created_at, id FROM runs ORDER BY created_at DESC, id DESC "
                                               "OFFSET :o LIMIT 1"), {"o": workflows // 2}).one())
            mid_run = mid_run_key[1]
        wf_cursor = encode(mid[0], mid[1])
        run_cursor = encode(mid_run)
        run_ids = loaded["run_ids"]
        rng = random.Random(7)

        with TestClient(create_app(Settings()), raise_server_exceptions=True) as client:
            def get(path):
                def call():
                    r = client.get(path() if callable(path) else path)
                    assert r.status_code == 200, (r.status_code, r.text[:300])
                return call

            checks = {
                "GET /workflows?limit=50": get("/workflows?limit=50"),
                "GET /workflows (page half-way down)": get(f"/workflows?limit=50&cursor={wf_cursor}"),
                "GET /workflows/{id}": get(lambda: f"/workflows/wf-{rng.randrange(workflows):07d}"),
                "GET /runs/{id} (with its steps)": get(lambda: f"/runs/{rng.choice(run_ids)}"),
                "GET /runs (page half-way down)": get(f"/runs?limit=50&cursor={run_cursor}"),
                "GET /workflows/{id}/runs": get(lambda: f"/workflows/wf-{rng.randrange(workflows):07d}/runs"),
            }
            r = client.get(f"/runs/{run_ids[0]}")
            assert len(r.json()["steps"]) == max(1, steps // workflows)
            page = client.get(f"/workflows?limit=50&cursor={wf_cursor}").json()
            assert len(page["items"]) == 50 and page["next_cursor"]
            for fn in checks.values():  # warm up
                for _ in range(5):
                    fn()
            select1()
            anchor = summary(timed(select1, samples * 2))
            results = {name: summary(timed(fn, samples)) for name, fn in checks.items()}
        plans = explain(url, (mid[0], mid[1]), mid_run_key)
        engine.dispose()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        from agentflow.store.db import get_engine as _ge

        _ge(url).dispose()
        with psycopg.connect(PG, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    for res in results.values():
        res["ratio"] = res["median_ms"] / anchor["median_ms"]
        res["met"] = res["median_ms"] < TARGET_MS and res["p95_ms"] < TARGET_MS
    print(f"scale: {workflows:,} workflows, {loaded['steps']:,} steps; median of {samples} requests each "
          f"through the API ({machine()})")
    print(f"  {'SELECT 1 round trip (anchor)':<38} {anchor['median_ms']:7.2f} ms  p95 {anchor['p95_ms']:6.2f} ms")
    for name, res in results.items():
        print(f"  {name:<38} {res['median_ms']:7.2f} ms  p95 {res['p95_ms']:6.2f} ms  {res['ratio']:6.1f}x anchor  "
              f"{'ok' if res['met'] else 'OVER'} (target < {TARGET_MS:g} ms)")
    for q, plan in plans.items():
        print(f"  plan, {q}: {plan}")
    return {"workflows": workflows, "steps": loaded["steps"], "runs": loaded["runs"],
            "load_seconds": loaded["seconds"], "anchor": anchor, "results": results, "plans": plans,
            "target_ms": TARGET_MS}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workflows", type=int, default=100_000)
    ap.add_argument("--steps", type=int, default=1_000_000)
    ap.add_argument("--samples", type=int, default=200)
    a = ap.parse_args()
    main(a.workflows, a.steps, a.samples)
