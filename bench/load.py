"""Load: many concurrent clients drive a real `agentflow serve` for minutes.

    .venv/bin/python bench/load.py [--seconds 180] [--clients 32] [--anchor-seconds 40]

Each client loops: POST /workflows/{id}/runs, then follows the run to its end - half the
clients poll GET /runs/{id} every 100 ms, the other half read GET /runs/{id}/events (SSE)
until the `end` event - then starts the next one (a closed loop: the offered load is what
the server can take, so memory must stay flat). The server is `agentflow serve` in embedded
mode (SQLite, the `make run` set-up) running a rules workflow (input -> rules router ->
aggregator: no model calls, so the API and the executor are what is measured).

Reported: runs/s and HTTP requests/s, p50/p99 of submit, poll and submit-to-end, error rate
(any non-2xx answer or transport error, and runs that did not succeed), and the server's
RSS sampled every second (start after warm-up, end, max; the series in 10 s steps).

Anchor: the same clients against a bare FastAPI app in the same run (bench.load:anchor_app:
POST /runs stores an id in a dict, GET /runs/{id} and the SSE stream answer "succeeded" at
once), served by the same uvicorn. Ratio = our HTTP requests/s / the anchor's.
Targets: error rate 0; RSS growth from the first to the last minute under 10 %.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ROOT, machine, pct  # noqa: E402

TERMINAL = ("succeeded", "failed", "cancelled")
POLL_EVERY = 0.1
MEMORY_GROWTH_TARGET = 0.10

SPEC = {
    "id": "load", "name": "load bench", "start_node": "input",
    "nodes": [{"id": "input", "type": "input"},
              {"id": "route", "type": "router", "config": {"mode": "rules", "rules": [
                  {"condition": "metadata.tier == 'paid'", "value": "priority"}], "default": "normal"}},
              {"id": "final", "type": "aggregator", "config": {"fields": ["intent", "user_input"]}}],
    "edges": [{"from": "input", "to": "route"}, {"from": "route", "to": "final"}],
}


# ---------------------------------------------------------------- the anchor app


def _make_anchor():
    from fastapi import FastAPI
    from sse_starlette import EventSourceResponse

    app = FastAPI()
    runs: dict[str, dict] = {}

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok"}

    @app.post("/workflows/{workflow_id}/runs", status_code=202)
    def submit(workflow_id: str, body: dict | None = None) -> dict:
        run_id = str(uuid.uuid4())
        runs[run_id] = {"run_id": run_id, "status": "succeeded", "steps": []}
        if len(runs) > 10_000:
            runs.pop(next(iter(runs)))
        return {"run_id": run_id, "status": "queued"}

    @app.get("/runs/{run_id}")
    def get_run(run_id: str) -> dict:
        return runs.get(run_id) or {"run_id": run_id, "status": "succeeded"}

    @app.get("/runs/{run_id}/events")
    async def events(run_id: str):
        async def stream():
            yield {"event": "end", "data": json.dumps(runs.get(run_id) or {"run_id": run_id})}
        return EventSourceResponse(stream())

    return app


def __getattr__(name: str):  # `uvicorn bench.load:anchor_app` builds it only in the server process
    if name == "anchor_app":
        app = _make_anchor()
        globals()["anchor_app"] = app
        return app
    raise AttributeError(name)


# ---------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list[str], env: dict, port: int) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{cmd} exited with {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"{cmd} did not start")


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its children (uvicorn runs in one process here)."""
    total = 0
    for p in [pid] + _children(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def _children(pid: int) -> list[int]:
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    out = [int(k) for k in kids]
    for k in list(out):
        out += _children(k)
    return out


def cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) of a process and its children, from /proc."""
    total = 0.0
    for p in [pid] + _children(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except OSError:
            pass
    return total


# ---------------------------------------------------------------- the clients


class Stats:
    def __init__(self):
        self.submit: list[float] = []
        self.poll: list[float] = []
        self.end_to_end: list[float] = []
        self.requests = 0
        self.errors = 0
        self.error_kinds: dict[str, int] = {}
        self.runs_ok = 0
        self.runs_bad = 0

    def error(self, kind: str) -> None:
        self.errors += 1
        self.error_kinds[kind] = self.error_kinds.get(kind, 0) + 1


async def client_loop(client: httpx.AsyncClient, stats: Stats, stop: float, sse: bool) -> None:
    body = {"input": {"user_input": "load test", "metadata": {"tier": "paid"}}}
    while time.perf_counter() < stop:
        t0 = time.perf_counter()
        try:
            r = await client.post(f"/workflows/{SPEC['id']}/runs", json=body)
        except httpx.HTTPError as exc:
            stats.requests += 1
            stats.error(type(exc).__name__)
            await asyncio.sleep(0.1)
            continue
        stats.requests += 1
        stats.submit.append(time.perf_counter() - t0)
        if r.status_code != 202:
            stats.error(f"submit {r.status_code}")
            await asyncio.sleep(0.1)
            continue
        run_id = r.json()["run_id"]
        status = None
        try:
            if sse:
                stats.requests += 1
                async with client.stream("GET", f"/runs/{run_id}/events") as resp:
                    if resp.status_code != 200:
                        stats.error(f"events {resp.status_code}")
                    else:
                        event = None
                        async for line in resp.aiter_lines():
                            if line.startswith("event:"):
                                event = line[6:].strip()
                            elif line.startswith("data:") and event == "end":
                                status = json.loads(line[5:]).get("status")
                                break
            else:
                while time.perf_counter() < stop + 30:
                    t1 = time.perf_counter()
                    g = await client.get(f"/runs/{run_id}")
                    stats.requests += 1
                    stats.poll.append(time.perf_counter() - t1)
                    if g.status_code != 200:
                        stats.error(f"poll {g.status_code}")
                        break
                    status = g.json().get("status")
                    if status in TERMINAL:
                        break
                    await asyncio.sleep(POLL_EVERY)
        except httpx.HTTPError as exc:
            stats.error(type(exc).__name__)
        if status == "succeeded":
            stats.runs_ok += 1
            stats.end_to_end.append(time.perf_counter() - t0)
        else:
            stats.runs_bad += 1


async def drive(base: str, clients: int, seconds: float) -> tuple[Stats, float]:
    stats = Stats()
    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client:
        stop = time.perf_counter() + seconds
        t0 = time.perf_counter()
        await asyncio.gather(*(client_loop(client, stats, stop, sse=(i % 2 == 1)) for i in range(clients)))
        elapsed = time.perf_counter() - t0
    return stats, elapsed


def run_load(base: str, pid: int, clients: int, seconds: float, warmup: float) -> dict:
    asyncio.run(drive(base, clients, warmup))
    samples: list[tuple[float, float]] = []
    done = False

    def sampler():
        t0 = time.perf_counter()
        while not done:
            samples.append((time.perf_counter() - t0, rss_mb(pid)))
            time.sleep(1.0)

    import threading

    thread = threading.Thread(target=sampler, daemon=True)
    thread.start()
    server0, client0 = cpu_seconds(pid), time.process_time()
    stats, elapsed = asyncio.run(drive(base, clients, seconds))
    server_cpu, client_cpu = cpu_seconds(pid) - server0, time.process_time() - client0
    done = True
    thread.join(timeout=5)
    mem = [m for _, m in samples]
    minute = max(1, min(60, len(mem) // 3))
    first, last = statistics.mean(mem[:minute]), statistics.mean(mem[-minute:])
    total_runs = stats.runs_ok + stats.runs_bad
    return {
        "seconds": elapsed, "clients": clients,
        "runs_per_s": stats.runs_ok / elapsed, "requests_per_s": stats.requests / elapsed,
        "requests": stats.requests, "runs": total_runs,
        "submit_p50_ms": pct(stats.submit, 50) * 1000, "submit_p99_ms": pct(stats.submit, 99) * 1000,
        "poll_p50_ms": pct(stats.poll, 50) * 1000 if stats.poll else None,
        "poll_p99_ms": pct(stats.poll, 99) * 1000 if stats.poll else None,
        "run_p50_ms": pct(stats.end_to_end, 50) * 1000, "run_p99_ms": pct(stats.end_to_end, 99) * 1000,
        "errors": stats.errors, "error_kinds": stats.error_kinds, "runs_not_succeeded": stats.runs_bad,
        "error_rate": (stats.errors + stats.runs_bad) / max(1, stats.requests),
        "rss_start_mb": mem[0] if mem else None, "rss_end_mb": mem[-1] if mem else None,
        "rss_max_mb": max(mem) if mem else None, "rss_first_mean_mb": first, "rss_last_mean_mb": last,
        "rss_growth": (last - first) / first if first else None,
        "rss_series_mb": [round(m, 1) for t, m in samples if int(t) % 10 == 0][:60],
        # where the time goes: CPU per finished run of the server (one process: the GIL caps it
        # at one core) and of the load client, which shares the machine's cores
        "server_cpu_ms_per_run": server_cpu * 1000 / max(1, stats.runs_ok),
        "server_cpu_share": server_cpu / elapsed,
        "client_cpu_ms_per_run": client_cpu * 1000 / max(1, stats.runs_ok),
    }


def main(seconds: float = 180.0, clients: int = 32, anchor_seconds: float | None = None) -> dict:
    anchor_seconds = anchor_seconds if anchor_seconds is not None else min(40.0, seconds / 2)
    home = tempfile.mkdtemp(prefix="af-load-")
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(AGENTFLOW_HOME=home, AGENTFLOW_AUTH="off", AGENTFLOW_LOAD_EXAMPLES="0",
               AGENTFLOW_RATE_IP_PER_MINUTE="0", AGENTFLOW_RATE_TENANT_PER_MINUTE="0", PYTHONUNBUFFERED="1")
    p_anchor, p_ours = free_port(), free_port()
    uvicorn = [sys.executable, "-m", "uvicorn", "--log-level", "warning", "--no-access-log"]
    anchor = start(uvicorn + ["bench.load:anchor_app", "--port", str(p_anchor)], env, p_anchor)
    try:
        anchor_res = run_load(f"http://127.0.0.1:{p_anchor}", anchor.pid, clients, anchor_seconds, warmup=3)
    finally:
        anchor.terminate()
        anchor.wait(timeout=20)
    ours = start([sys.executable, "-m", "agentflow.cli", "serve", "--port", str(p_ours), "--log-level", "warning"],
                 env, p_ours)
    try:
        r = httpx.post(f"http://127.0.0.1:{p_ours}/workflows", json=SPEC, timeout=30)
        assert r.status_code in (200, 201), r.text
        ours_res = run_load(f"http://127.0.0.1:{p_ours}", ours.pid, clients, seconds, warmup=10)
    finally:
        ours.terminate()
        try:
            ours.wait(timeout=30)
        except subprocess.TimeoutExpired:
            ours.kill()
    ratio = ours_res["requests_per_s"] / anchor_res["requests_per_s"]
    print(f"load: {clients} concurrent clients (half polling, half SSE), closed loop; embedded `agentflow serve` "
          f"(SQLite) for {ours_res['seconds']:.0f} s, bare FastAPI anchor for {anchor_res['seconds']:.0f} s "
          f"({machine()})")
    for label, res in (("bare FastAPI anchor", anchor_res), ("agentflow serve", ours_res)):
        poll = (f"poll p50 {res['poll_p50_ms']:.1f} p99 {res['poll_p99_ms']:.1f} ms  " if res["poll_p50_ms"] is not None
                else "")
        print(f"  {label:<20}: {res['runs_per_s']:6.1f} runs/s  {res['requests_per_s']:6.1f} req/s  "
              f"submit p50 {res['submit_p50_ms']:.1f} p99 {res['submit_p99_ms']:.1f} ms  {poll}"
              f"run p50 {res['run_p50_ms']:.0f} p99 {res['run_p99_ms']:.0f} ms  errors {res['error_rate']:.2%}")
    print(f"  ratio req/s ours/anchor : {ratio:.2f}x")
    print(f"  API RSS: start {ours_res['rss_start_mb']:.0f} MB, end {ours_res['rss_end_mb']:.0f} MB, "
          f"max {ours_res['rss_max_mb']:.0f} MB; first-vs-last window {ours_res['rss_growth']:+.1%} "
          f"(target < {MEMORY_GROWTH_TARGET:.0%}); every 10 s: {ours_res['rss_series_mb']}")
    if ours_res["error_kinds"]:
        print(f"  errors by kind: {ours_res['error_kinds']}")
    return {"anchor": anchor_res, "ours": ours_res, "ratio": ratio, "memory_growth_target": MEMORY_GROWTH_TARGET}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=180.0)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--anchor-seconds", type=float, default=None)
    a = ap.parse_args()
    main(a.seconds, a.clients, a.anchor_seconds)
