"""Capacity: what one run costs each component, the figures docs/scaling.md sizes fleets with.

A distributed stack of real processes: `agentflow serve` (auth off, limits off), a run-driver
worker (threads), an LLM worker (prefork 2), the stand-in OpenAI server (in this process, not
counted), this bench's Redis db and a fresh Postgres database. A workflow of 4 steps:
input -> writer (llm) -> reviewer (llm) -> final (aggregator), the LLM steps on a queue with a
rate limit far above what the bench reaches (each pays the limiter's check, never a wait).
CLIENTS clients each submit a run through the API and poll GET /runs/{id} every POLL s until
it ends, then submit the next.

Measured over the measured runs (after a warm-up), divided by their number:
- CPU ms of each process group (/proc: user + system of the process and its pool children),
  of the redis-server and of the Postgres backends serving this database;
- Redis commands (INFO commandstats) and network bytes in + out;
- Postgres transactions committed, rows written (inserted + updated + deleted) and the growth
  of the database's tables and indexes (bytes stored).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402

from bench.common import fresh_env, pct  # noqa: E402

CLIENTS = 8
POLL = 0.25
STEPS = 4
TICKS = os.sysconf("SC_CLK_TCK")

# The fleet model's assumptions (docs/scaling.md): HLD 11.2's phases in concurrent users; each
# starts one run of this workflow every USER_RUN_EVERY s and follows it; a real model call
# takes LLM_SECONDS; pods run at TARGET_CPU of CORES_PER_POD; an LLM worker pod (threads pool)
# holds SLOTS_PER_POD calls at once.
PHASES = {"Phase 1": 100, "Phase 2": 1_000, "Phase 3": 10_000}
USER_RUN_EVERY = 60.0
LLM_SECONDS = 2.0
TARGET_CPU = 0.7
CORES_PER_POD = 1.0
SLOTS_PER_POD = 32


def spec() -> dict:
    llm = {"source": "gpt", "queue": "llm"}  # limited far above what the bench reaches: the check, not a wait
    return {"id": "capacity", "name": "capacity", "start_node": "input",
            "nodes": [{"id": "input", "type": "input"},
                      {"id": "writer", "type": "llm", **llm,
                       "config": {"prompt": "{user_input}", "output_key": "draft", "max_tokens": 60}},
                      {"id": "reviewer", "type": "llm", **llm,
                       "config": {"prompt": "Review: {draft}", "output_key": "text_result", "max_tokens": 60}},
                      {"id": "final", "type": "aggregator", "config": {"fields": ["text_result"],
                                                                       "output_key": "final_output"}}],
            "edges": [{"from": "input", "to": "writer"}, {"from": "writer", "to": "reviewer"},
                      {"from": "reviewer", "to": "final"}],
            "queues": [{"id": "llm", "max_requests_per_minute": 600000, "burst_size": 1000}],
            "sources": [{"id": "gpt", "kind": "llm", "provider": "openai", "model": "gpt-4o-mini",
                         "api_key_env": "OPENAI_API_KEY", "base_url_env": "OPENAI_BASE_URL"}]}


def group_cpu_ms(pgid: int) -> float:
    """User + system CPU of every live process in a process group, in ms."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # fields after the name: state ppid pgrp ...
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total * 1000 / TICKS


def pid_cpu_ms(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) * 1000 / TICKS


def redis_pid(url: str) -> int | None:
    """The redis-server listening on the URL's port (its title names the port)."""
    from urllib.parse import urlsplit

    port = f":{urlsplit(url).port or 6379}"
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if cmd.startswith("redis-server") and port in cmd:
                return int(entry)
    return None


class Meters:
    """Counters of every component, read before and after the measured runs."""

    def __init__(self, env: dict, groups: dict[str, int]):
        import psycopg
        import redis

        self.groups = groups
        self.redis = redis.Redis.from_url(env["REDIS_URL"])
        self.pg = psycopg.connect(env["DATABASE_URL"], autocommit=True)
        self.dbname = self.pg.info.dbname
        self.redis_pid = redis_pid(env["REDIS_URL"])

    def read(self) -> dict:
        cpu = {name: group_cpu_ms(pgid) for name, pgid in self.groups.items()}
        cpu["redis"] = pid_cpu_ms(self.redis_pid) if self.redis_pid else float("nan")
        backends = [r[0] for r in self.pg.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", (self.dbname,))]
        commands = self.redis.info("commandstats")
        stats = self.redis.info("stats")
        db = self.pg.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = %s", (self.dbname,)).fetchone()
        rows, size = self.pg.execute(
            "SELECT coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0), "
            "coalesce(sum(pg_total_relation_size(relid)), 0) FROM pg_stat_user_tables").fetchone()
        return {"cpu": cpu, "backends": {pid: pid_cpu_ms(pid) for pid in backends},
                "redis_calls": sum(v["calls"] for v in commands.values()),
                "redis_by_command": {k.removeprefix("cmdstat_"): v["calls"] for k, v in commands.items()},
                "redis_bytes": stats["total_net_input_bytes"] + stats["total_net_output_bytes"],
                "pg_commits": db[0], "pg_rows": int(rows), "pg_bytes": int(size)}

    def close(self) -> None:
        self.pg.close()


def drive(base: str, n: int, clients: int = CLIENTS) -> dict:
    """n runs by `clients` closed-loop clients: (latencies, requests made)."""
    lock = threading.Lock()
    left = [n]
    latencies: list[float] = []
    requests = [0]

    def client() -> None:
        with httpx.Client(base_url=base, timeout=60) as c:
            while True:
                with lock:
                    if left[0] == 0:
                        return
                    left[0] -= 1
                t0 = time.perf_counter()
                r = c.post("/workflows/capacity/runs", json={"input": {"user_input": "hello there"}})
                assert r.status_code == 202, r.text
                run_id, calls = r.json()["run_id"], 1
                while True:
                    time.sleep(POLL)
                    calls += 1
                    rec = c.get(f"/runs/{run_id}").json()
                    if rec["status"] in ("succeeded", "failed", "cancelled"):
                        assert rec["status"] == "succeeded", rec["error"]
                        break
                with lock:
                    latencies.append(time.perf_counter() - t0)
                    requests[0] += calls

    threads = [threading.Thread(target=client) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"seconds": time.perf_counter() - t0, "latencies": latencies, "requests": requests[0]}


def main(runs: int = 300, warmup: int = 20) -> dict:
    import subprocess

    from agentflow.workers.launch import WorkerProcesses, stop_process_groups
    from tests.servers.openai_server import OpenAIServer

    llm = OpenAIServer().start()
    with fresh_env(redis_db=12) as env:
        env.update(AGENTFLOW_AUTH="off", OPENAI_API_KEY="sk-bench-capacity-0000", OPENAI_BASE_URL=llm.base_url,
                   AGENTFLOW_RATE_IP_PER_MINUTE="0", AGENTFLOW_RATE_TENANT_PER_MINUTE="0")
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        api = subprocess.Popen([sys.executable, "-m", "agentflow.cli", "serve", "--port", str(port),
                                "--log-level", "warning"], env=env, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        workers = WorkerProcesses(env)
        try:
            workers.start("driver", "runs", concurrency=CLIENTS, pool="threads", log_level="warning")
            workers.start("llm", "agentflow.llm", concurrency=2, log_level="warning")
            workers.wait_ready(["driver", "llm"])
            base = f"http://127.0.0.1:{port}"
            deadline = time.time() + 60
            while True:
                try:
                    if httpx.get(base + "/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.time() > deadline:
                    raise RuntimeError("the API did not start")
                time.sleep(0.3)
            assert httpx.post(base + "/workflows", json=spec(), timeout=30).status_code == 201
            drive(base, warmup)
            meters = Meters(env, {"api": api.pid, "driver": workers.procs["driver"].pid,
                                  "llm": workers.procs["llm"].pid})
            before = meters.read()
            out = drive(base, runs)
            after = meters.read()
            meters.close()
        finally:
            stop_process_groups([api, *workers.procs.values()], grace=20)
            llm.stop()

    cpu = {k: (after["cpu"][k] - before["cpu"][k]) / runs for k in after["cpu"]}
    cpu["postgres"] = sum(ms - before["backends"].get(pid, 0.0) for pid, ms in after["backends"].items()) / runs
    by_command = {k: (v - before["redis_by_command"].get(k, 0)) / runs for k, v in after["redis_by_command"].items()}
    by_command = dict(sorted(((k, v) for k, v in by_command.items() if v >= 0.5), key=lambda kv: -kv[1]))
    result = {
        "runs": runs, "steps_per_run": STEPS, "llm_calls_per_run": 2, "clients": CLIENTS, "poll_s": POLL,
        "runs_per_s": runs / out["seconds"], "p50_s": pct(out["latencies"], 50), "p99_s": pct(out["latencies"], 99),
        "api_requests_per_run": out["requests"] / runs, "cpu_ms_per_run": cpu,
        "redis_ops_per_run": (after["redis_calls"] - before["redis_calls"]) / runs,
        "redis_ops_by_command": by_command,
        "redis_bytes_per_run": (after["redis_bytes"] - before["redis_bytes"]) / runs,
        "pg_commits_per_run": (after["pg_commits"] - before["pg_commits"]) / runs,
        "pg_rows_per_run": (after["pg_rows"] - before["pg_rows"]) / runs,
        "pg_bytes_per_run": (after["pg_bytes"] - before["pg_bytes"]) / runs,
    }
    result["fleet"] = fleet(result)
    result["assumptions"] = {"user_run_every_s": USER_RUN_EVERY, "llm_seconds": LLM_SECONDS, "target_cpu": TARGET_CPU,
                             "cores_per_pod": CORES_PER_POD, "slots_per_pod": SLOTS_PER_POD}
    print(result)
    return result


def fleet(r: dict) -> dict:
    """Per HLD phase: load, then what serves it, from the measured per-run costs."""
    import math

    cpu = r["cpu_ms_per_run"]
    out = {}
    for phase, users in PHASES.items():
        runs_s = users / USER_RUN_EVERY
        calls_s = runs_s * r["llm_calls_per_run"]
        # a run is in flight for its model calls (one after the other here) plus the measured
        # overhead of an instant-model run
        in_flight = runs_s * (r["llm_calls_per_run"] * LLM_SECONDS + r["p50_s"])
        cores = {k: cpu[k] * runs_s / 1000 for k in cpu}

        def pods(k: str, slots: float = 0.0) -> int:
            return max(2, math.ceil(cores[k] / (CORES_PER_POD * TARGET_CPU)), math.ceil(slots / SLOTS_PER_POD))

        out[phase] = {
            "users": users, "runs_per_s": runs_s, "llm_calls_per_s": calls_s, "runs_in_flight": in_flight,
            # a paused run holds no driver (the event-driven runtime): drivers are sized by CPU
            "api_pods": pods("api"), "driver_pods": pods("driver"),
            "llm_pods": pods("llm", calls_s * LLM_SECONDS),
            "redis_ops_per_s": r["redis_ops_per_run"] * runs_s, "redis_cores": cores.get("redis", float("nan")),
            "redis_mib_per_s": r["redis_bytes_per_run"] * runs_s / 2**20,
            "pg_tx_per_s": r["pg_commits_per_run"] * runs_s, "pg_rows_per_s": r["pg_rows_per_run"] * runs_s,
            "pg_cores": cores["postgres"], "pg_gib_per_day": r["pg_bytes_per_run"] * runs_s * 86400 / 2**30,
        }
    return out


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))
