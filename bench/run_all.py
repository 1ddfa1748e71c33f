"""Every benchmark, one after the other; rewrites bench/RESULTS.md (`make bench`).

    .venv/bin/python bench/run_all.py [--quick] [--only load,scale] [--no-write]

Each bench runs in its own process (its `main()`, called with this run's sizes) on a
redis-server of its own, so one that fails or patches globals cannot disturb the others
and test runs flushing the shared Redis cannot disturb it; a failed bench is reported as
such in RESULTS.md and the rest still run. Every figure is set against an anchor measured
in the same run on the same machine, as a ratio, with the target and whether it was met.
`--quick` uses small sizes (a smoke run of a few minutes; RESULTS.md then says so).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "RESULTS.md"
# every bench's last outcome (figures and raw output): `--only` re-runs some and keeps the rest
OUTCOMES = ROOT / "bench" / "results.json"

# name -> (title, kwargs at default size, kwargs with --quick)
BENCHES = {
    "engine_overhead": ("Engine overhead", {"n": 300}, {"n": 50}),
    "throughput": ("Distributed throughput", {"n": 200}, {"n": 40}),
    "waiting_runs": ("Runs in flight with no worker slot held", {"n": 10_000}, {"n": 1_000}),
    "api_submit": ("API submit rate", {"seconds": 10.0}, {"seconds": 3.0}),
    "ratelimit": ("Rate-limit accuracy", {"argv": ["--seconds", "20", "--workers", "1,2,4"]},
                  {"argv": ["--seconds", "6", "--workers", "1,2"]}),
    "load": ("Load: concurrent clients on the API", {"seconds": 180.0, "clients": 32},
             {"seconds": 20.0, "clients": 16, "anchor_seconds": 8.0}),
    "sse_watchers": ("SSE watchers on one API process", {"watchers": 10_000, "runs": 100},
                     {"watchers": 1_000, "runs": 20, "deadline": 60.0}),
    "scale": ("Scale: 100,000 workflows, 1,000,000 steps", {"workflows": 100_000, "steps": 1_000_000, "samples": 200},
              {"workflows": 10_000, "steps": 100_000, "samples": 50}),
    "capacity": ("Capacity: what one run costs each component", {"runs": 300}, {"runs": 60, "warmup": 8}),
}


# ---------------------------------------------------------------- one bench (child process)


class _Tee(io.TextIOBase):
    def __init__(self, *streams):
        self.streams = streams

    def write(self, s):
        for st in self.streams:
            st.write(s)
            st.flush()
        return len(s)


ROOT_DIR = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def private_redis():
    """A redis-server of this bench's own: the shared one's numbered databases are flushed
    by test runs at any time (tests/distributed picks one of 1-14), which emptied a bench's
    queue mid-run once."""
    import socket

    import redis

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 20
        while True:
            try:
                if redis.Redis(port=port, socket_connect_timeout=0.5).ping():
                    break
            except redis.RedisError:
                if time.time() > deadline or proc.poll() is not None:
                    raise RuntimeError("private redis-server did not start") from None
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def run_one(name: str, kwargs: dict, out: Path) -> None:
    import importlib

    from bench import common

    sys.argv = [sys.argv[0]]  # some benches read sizes from argv at import time
    with private_redis() as redis_base:
        os.environ["REDIS_URL"] = f"{redis_base}/0"
        os.environ[common.REDIS_BASE_ENV] = redis_base  # bench.common.fresh_env uses it
        module = importlib.import_module(f"bench.{name}")
        if name == "ratelimit":
            kwargs = {"argv": [*kwargs["argv"], "--redis-url", f"{redis_base}/0"]}
        captured = io.StringIO()
        with contextlib.redirect_stdout(_Tee(sys.__stdout__, captured)):
            result = module.main(**kwargs)
    out.write_text(json.dumps({"result": result, "stdout": captured.getvalue()}, default=str))


# ---------------------------------------------------------------- the report


def machine() -> dict:
    info = {"python": platform.python_version(), "os": f"{platform.system()} {platform.release()}",
            "arch": platform.machine(), "cpus": os.cpu_count()}
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        m = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
        info["cpu"] = m.group(1).strip() if m else "?"
    except OSError:
        info["cpu"] = platform.processor() or "?"
    try:
        m = re.search(r"^MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text(), re.M)
        info["memory"] = f"{int(m.group(1)) / 2**20:.1f} GiB" if m else "?"
    except OSError:
        info["memory"] = "?"
    for key, cmd in (("postgres", ["psql", "--version"]), ("redis", ["redis-server", "--version"])):
        try:
            info[key] = subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            info[key] = "?"
    try:
        info["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                        text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        info["commit"] = "?"
    return info


def fmt(v, unit: str = "", digits: int = 2) -> str:
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    if abs(v) >= 100:
        s = f"{v:,.0f}"
    elif abs(v) >= 10:
        s = f"{v:.1f}"
    else:
        s = f"{v:.{digits}f}"
    return f"{s} {unit}".strip()


def row(figure, ours, anchor, ratio, target, met) -> str:
    mark = "-" if met is None else ("yes" if met else "**no**")
    return f"| {figure} | {ours} | {anchor} | {ratio} | {target} | {mark} |"


HEAD = "| figure | ours | anchor | ratio | target | met? |\n| --- | --- | --- | --- | --- | --- |"


def section_engine(r: dict) -> list[str]:
    return [
        "Anchors: the same triage graph written by hand in LangGraph, instant node functions in both; for the "
        "second row the hand-written node functions make the same observer and limiter calls ours makes around "
        "a step (the same in-memory observer class, the same in-process limiter); for the deny row the limiter "
        "never grants the first queued node (max wait 0) on both sides; the cache rows start from the stored "
        "JSON text: a hit is `json.loads` + the spec's canonical bytes (orjson, sorted keys) + two cache lookups, a miss parses, validates and "
        "builds. Ours and the anchor run in alternating batches (9 rounds); each ratio is the median of the "
        "rounds' ratios.", "",
        HEAD,
        row("one invoke, no observer, no limiter", fmt(r["agentflow_ms"], "ms", 3), fmt(r["hand_written_ms"], "ms", 3),
            f"{r['invoke_ratio']:.2f}x", "<= 1.3x", r["invoke_ratio"] <= 1.3),
        row("one invoke, observer and limiter on", fmt(r["agentflow_observed_ms"], "ms", 3),
            fmt(r["hand_written_observed_ms"], "ms", 3), f"{r['observed_ratio']:.2f}x", "<= 1.1x",
            r["observed_ratio"] <= 1.1),
        row("deny path: the router's queue gives no grant", fmt(r["agentflow_deny_ms"], "ms", 3),
            fmt(r["hand_written_deny_ms"], "ms", 3), f"{r['deny_ratio']:.2f}x", "-", None),
        row("compile-cache hit from stored JSON (anchor: parse + validate + build)", fmt(r["cache_hit_ms"], "ms", 4),
            fmt(r["cold_build_ms"], "ms"), f"{r['cache_speedup']:,.0f}x faster", ">= 100x", r["cache_speedup"] >= 100),
        row("(for reference) cache lookup on an already-parsed spec", fmt(r["lookup_only_ms"], "ms", 4), "-", "-",
            "-", None),
    ]


def section_throughput(r: dict) -> list[str]:
    runs, chain, pr = r["runs"], r["chain"], r["per_run"]
    queues = " -> ".join("runs" if i % 2 == 0 else "agentflow.db" for i in range(pr["messages"]))
    pg = pr["pg"]
    top = lambda items: ", ".join(f"{k} {v:.1f}" for k, v in items)  # noqa: E731
    return [
        f"Workers: 2 × `agentflow worker` with no arguments (every queue, prefork × 2), the same processes for "
        f"both sides. Anchor: a raw Celery chain of {pr['messages']} tasks per run, the number of messages one of "
        f"our runs was counted to publish (kombu LPUSH calls on the bench's private Redis: {pr['messages']} per "
        f"run, the chain {pr['anchor_messages']:.1f}), on the same queues in the same order ({queues}); each "
        f"anchor task does one Redis SET and one Postgres INSERT of {pr['payload_bytes']} B (the mean size of our "
        f"step rows); like our driver and node tasks, the chain's tasks store no Celery result, except the last "
        f"(the bench reads it to know the chain ended, as it reads our run rows). Chains and runs alternate over {len(r['ratios'])} rounds of {runs['n']}; shown is the "
        f"round with the median ratio (ratios per round: {', '.join(f'{x:.2f}' for x in r['ratios'])}).", "",
        HEAD,
        row("runs/s, 4-node workflow (2 remote db steps), instant nodes", fmt(runs["per_s"], "/s"),
            fmt(chain["per_s"], "/s"), f"{r['ratio']:.2f}x", ">= 0.9x", r["ratio"] >= 0.9),
        row("submit-to-finish p50", fmt(runs["p50"] * 1000, "ms"), fmt(chain["p50"] * 1000, "ms"),
            f"{runs['p50'] / chain['p50']:.2f}x", "-", None),
        row("submit-to-finish p99", fmt(runs["p99"] * 1000, "ms"), fmt(chain["p99"] * 1000, "ms"),
            f"{runs['p99'] / chain['p99']:.2f}x", "-", None),
        "",
        "Where the time goes (per run vs per anchor chain, same round):", "",
        "| per run | ours | anchor chain |", "| --- | --- | --- |",
        f"| worker CPU (all worker processes, /proc) | {pr['worker_cpu_ms']:.1f} ms | {pr['anchor_worker_cpu_ms']:.1f} ms |",
        f"| Postgres backend CPU (/proc) | {pr['pg_cpu_ms']:.1f} ms | {pr['anchor_pg_cpu_ms']:.1f} ms |",
        f"| Redis CPU (INFO cpu) | {pr['redis_cpu_ms']:.2f} ms | {pr['anchor_redis_cpu_ms']:.2f} ms |",
        f"| Redis commands | {pr['redis_ops']:.1f} ({top(pr['redis_top'])}) | {pr['anchor_redis_ops']:.1f} "
        f"({top(pr['anchor_redis_top'])}) |",
        "",
        "### Per-run costs (for docs/scaling.md)", "",
        f"Measured on our runs alone (a last round of {runs['n']} runs; Postgres counters from pg_stat_database, "
        "bytes from pg_total_relation_size deltas). One run = 4 steps, 2 of them remote.", "",
        "| cost | per run | per step |", "| --- | --- | --- |",
        f"| broker messages | {pr['messages']} | {pr['messages'] / 4:.2f} |",
        f"| worker CPU | {pr['worker_cpu_ms']:.1f} ms | {pr['worker_cpu_ms'] / 4:.1f} ms |",
        f"| Postgres backend CPU | {pr['pg_cpu_ms']:.1f} ms | {pr['pg_cpu_ms'] / 4:.1f} ms |",
        f"| Redis CPU | {pr['redis_cpu_ms']:.2f} ms | {pr['redis_cpu_ms'] / 4:.2f} ms |",
        f"| Redis commands | {pr['redis_ops']:.0f} | {pr['redis_ops'] / 4:.0f} |",
        f"| Postgres commits | {pg['commits']:.1f} | {pg['commits'] / 4:.1f} |",
        f"| Postgres rows inserted / updated / deleted | {pg['inserted']:.1f} / {pg['updated']:.1f} / "
        f"{pg['deleted']:.1f} | {pg['inserted'] / 4:.1f} / {pg['updated'] / 4:.1f} / {pg['deleted'] / 4:.1f} |",
        f"| Postgres bytes stored | {sum(pg['bytes'].values()):,.0f} B ("
        + ", ".join(f"{t} {b:,.0f}" for t, b in pg["bytes"].items()) + f") | {sum(pg['bytes'].values()) / 4:,.0f} B |",
    ]


def section_waiting(r: dict) -> list[str]:
    n, st = r["n"], r["statuses"]
    kinds = list(r["redis_keys"].items())[:6]
    return [
        f"{n:,} runs of a one-`llm`-node workflow whose queue allows 1 message/s (burst 1), submitted at once "
        f"through {r['workers']} default `agentflow worker` processes (prefork × 2 each: 4 slots); the LLM is the "
        "stand-in server. A run waiting for a remote step keeps status `running` with `waiting_for` set; its node "
        "message waits in the Redis sorted set `af:delayed`, not in a worker. Anchors: an idle fleet's active "
        "tasks; the queued run row alone.", "",
        HEAD,
        row("runs accepted and waiting, 0 slots held", f"{r['waiting']:,} waiting, {r['finished']:,} done "
            f"(1/s), after {r['settle_s']:.0f} s", f"{n:,} submitted", f"{(r['waiting'] + r['finished']) / n:.3f}",
            f"{n:,}", r["waiting"] + r["finished"] >= n and n >= 10_000),
        row(f"active tasks on the workers while they wait ({len(r['active_while_waiting'])} samples, 0.5 s apart)",
            ", ".join(map(str, r["active_while_waiting"])), f"{r['active_idle']} (idle fleet)", "-", "-", None),
        row("runs those tasks serve (the one whose step has its 1/s turn)",
            ", ".join(map(str, r.get("runs_in_slots", r["active_while_waiting"]))), "-", "-", "<= 1",
            max(r.get("runs_in_slots", r["active_while_waiting"])) <= 1),
        row("delayed node messages in Redis", f"{r['delayed_messages']:,}", "-", "-", "-", None),
        row("Redis bytes per waiting run (used_memory delta)", fmt(r["redis_bytes_per_run"], "B"), "-", "-", "-", None),
        row("Postgres bytes per waiting run (runs, steps, checkpoints)", fmt(r["pg_total_per_run"], "B"),
            fmt(r["pg_row_only_per_run"], "B") + " (queued run row alone)", "-", "-", None),
        "",
        "Statuses at the end: " + ", ".join(f"{k} {v:,}" for k, v in st.items()) + ".",
        "Postgres bytes per run by table: " + ", ".join(f"{t} {b:,.0f}" for t, b in r["pg_bytes_per_run"].items()) + ".",
        "Redis keys by kind (MEMORY USAGE): " + "; ".join(
            f"`{k}` {v['keys']:,} keys, {v['bytes'] / n:,.0f} B/run" for k, v in kinds) + ". "
        "The driver and node tasks store no Celery result, so there are no `celery-task-meta-*` keys.",
    ]


def section_sse(r: dict) -> list[str]:
    a, m = r["anchor"], r["many"]
    return [
        f"One `agentflow serve` (embedded, SQLite), {r['runs']} runs of input -> human -> aggregator left waiting; "
        f"{m['watchers']:,} raw-socket SSE clients (an asyncio script on this machine; nofile {r['nofile']}) follow "
        f"them ({m['watchers'] // r['runs']} per run). Every run is then answered; a watcher's delay is from its "
        "run's answer being accepted to its `end` event arriving. Anchor: one watcher per run, same runs, same "
        "server.", "",
        HEAD,
        row("watchers open at once", f"{m['opened']:,} (in {m['open_seconds']:.0f} s)", f"{a['opened']:,}",
            "-", f"{m['watchers']:,}", m["opened"] >= m["watchers"]),
        row("event delay p50", fmt(m["delay_p50"] * 1000, "ms"), fmt(a["delay_p50"] * 1000, "ms"),
            f"{m['delay_p50'] / a['delay_p50']:.1f}x", "-", None),
        row("event delay p99", fmt(m["delay_p99"] * 1000, "ms"), fmt(a["delay_p99"] * 1000, "ms"),
            f"{m['delay_p99'] / a['delay_p99']:.1f}x", "< 1 s", m["delay_p99"] < 1.0 and m["lost"] == 0),
        row("watchers that got no `end`", f"{m['lost']:,} {m['errors'] or ''}", f"{a['lost']}", "-", "0",
            m["lost"] == 0),
        row("API memory per watcher (RSS delta / watchers)", f"{m['kb_per_watcher']:.1f} KB",
            f"{m['rss_idle_mb']:.0f} MB idle", "-", "-", None),
    ]


def section_submit(r: dict) -> list[str]:
    s, a = r["submit"], r["anchor"]
    d = r.get("deny") or {}
    out = [
        "JWT verification ON on both sides (AGENTFLOW_AUTH=required, HS256). Anchor: a bare FastAPI endpoint that "
        "verifies the same token with PyJWT and enqueues a Celery no-op; both under uvicorn, one process each, "
        f"16 clients; {len(r.get('rounds', [1]))} alternating rounds, the round with the median ratio shown "
        f"(each round: {', '.join(f'{x:.2f}x' for x in r.get('rounds', [r['ratio']]))}). Deny path: the same "
        "requests with a token signed by another key (401 on both sides).", "",
        HEAD,
        row("POST /workflows/{id}/runs, requests/s", fmt(s["per_s"], "/s"), fmt(a["per_s"], "/s"),
            f"{r['ratio']:.2f}x", ">= 0.8x", r["ratio"] >= 0.8),
        row("latency p50", fmt(s["p50"] * 1000, "ms"), fmt(a["p50"] * 1000, "ms"), f"{s['p50'] / a['p50']:.2f}x", "-",
            None),
        row("latency p99", fmt(s["p99"] * 1000, "ms"), fmt(a["p99"] * 1000, "ms"), f"{s['p99'] / a['p99']:.2f}x", "-",
            None),
        row("errors", str(s["errors"]), str(a["errors"]), "-", "0", s["errors"] == 0),
    ]
    if d:
        out.append(row("deny path (forged token -> 401), requests/s", fmt(d["ours"]["per_s"], "/s"),
                       fmt(d["anchor"]["per_s"], "/s"), f"{d['ratio']:.2f}x", "-", None))
    sc, ac = s.get("costs"), a.get("costs")
    if sc and ac:
        def top(c: dict) -> str:
            return ", ".join(f"{k} {v:.1f}" for k, v in c["redis_top"].items())
        out += ["", "Where the time goes (per request, same round; the client and both servers share the machine's "
                "cores, so a side's throughput is bounded by the CPU its requests cost all parts together):", "",
                "| per request | ours | anchor |", "| --- | --- | --- |",
                f"| API server process CPU (/proc) | {sc['server_cpu_ms']:.2f} ms | {ac['server_cpu_ms']:.2f} ms |",
                f"| Postgres backend CPU (/proc) | {sc['pg_cpu_ms']:.2f} ms | {ac['pg_cpu_ms']:.2f} ms |",
                f"| Redis CPU (INFO cpu) | {sc['redis_cpu_ms']:.2f} ms | {ac['redis_cpu_ms']:.2f} ms |",
                f"| load client CPU (this process) | {sc['client_cpu_ms']:.2f} ms | {ac['client_cpu_ms']:.2f} ms |",
                f"| Redis commands | {sc['redis_ops']:.1f} ({top(sc)}) | {ac['redis_ops']:.1f} ({top(ac)}) |"]
    return out


def section_ratelimit(r: dict) -> list[str]:
    rows = r.get("rows") or []
    if not rows:
        return ["The rate-limit bench printed no rows (see the log)."]
    rate, burst = rows[0]["rate"], rows[0]["burst"]
    out = [f"Anchors: the configured rate ({fmt(rate)} msg/s, burst {burst}, sub-queues paid 3 : free 1) for "
           "accuracy; for cost, the SAME Lua script with the same keys and arguments called through redis-py's "
           "`Script` (EVALSHA) by as many processes at once, for the grant and the deny path (and a bare INCR "
           "round trip for scale).", "", HEAD]
    for x in rows:
        n = x["workers"]
        out.append(row(f"achieved rate, {n} worker(s)", fmt(x["ratio"] * rate, "/s"), fmt(rate, "/s"),
                       f"{x['ratio']:.3f}", "0.97 to 1.00", 0.97 <= round(x["ratio"], 3) <= 1.0))
        if "seconds" in x:  # the count the ratio's end points can blur: a GCRA limit allows rate x T + burst
            most = rate * x["seconds"] + burst
            out.append(row(f"grants in the whole {x['seconds']:g} s run, {n} worker(s)", str(x["grants"]),
                           f"{most:.0f} (rate x {x['seconds']:g} s + burst)", f"{x['grants'] / most:.3f}",
                           "<= rate x T + burst", x["grants"] <= most))
        out.append(row(f"most grants in any 1 s, {n} worker(s)", str(x["worst_1s"]), f"{fmt(rate)} + burst {burst}",
                       f"{x['worst_1s'] / (rate + burst):.2f}", "<= rate + burst", x["worst_1s"] <= rate + burst))
        out.append(row(f"share error (weights 3:1), {n} worker(s)", f"{x['share_err_pct']:.2f} %", "exact share",
                       "-", "-", None))
        out.append(row(f"try_acquire grant cost, {n} worker(s)", fmt(x["acquire_us"], "us"),
                       fmt(x["py_acquire_us"], "us") + " (redis-py)", f"{x['acquire_x_py']:.2f}x", "<= 1x",
                       x["acquire_x_py"] <= 1.0))
        out.append(row(f"try_acquire deny cost, {n} worker(s)", fmt(x["deny_us"], "us"),
                       fmt(x["py_deny_us"], "us") + " (redis-py)", f"{x['deny_x_py']:.2f}x", "<= 1x",
                       x["deny_x_py"] <= 1.0))
        out.append(row(f"grant cost vs a bare INCR, {n} worker(s)", fmt(x["acquire_us"], "us"), fmt(x["incr_us"], "us"),
                       f"{x['acquire_x_incr']:.2f}x", "-", None))
    return out


def section_load(r: dict) -> list[str]:
    o, a = r["ours"], r["anchor"]
    growth = o["rss_growth"]
    return [
        f"{o['clients']} concurrent clients for {o['seconds']:.0f} s, closed loop (submit, then follow the run: half "
        "poll GET /runs/{id} every 100 ms, half read the SSE stream to its end). Ours: `agentflow serve` embedded "
        "(SQLite), a 3-node rules workflow. Anchor: a bare FastAPI app answering the same calls from a dict, same "
        f"uvicorn, same clients ({a['seconds']:.0f} s).", "",
        HEAD,
        row("HTTP requests/s", fmt(o["requests_per_s"], "/s"), fmt(a["requests_per_s"], "/s"),
            f"{r['ratio']:.2f}x", "-", None),
        row("runs/s (submit + follow to the end)", fmt(o["runs_per_s"], "/s"), fmt(a["runs_per_s"], "/s"),
            f"{o['runs_per_s'] / a['runs_per_s']:.2f}x", "-", None),
        row("submit p50", fmt(o["submit_p50_ms"], "ms"), fmt(a["submit_p50_ms"], "ms"),
            f"{o['submit_p50_ms'] / a['submit_p50_ms']:.1f}x", "-", None),
        row("submit p99", fmt(o["submit_p99_ms"], "ms"), fmt(a["submit_p99_ms"], "ms"),
            f"{o['submit_p99_ms'] / a['submit_p99_ms']:.1f}x", "-", None),
        row("poll (GET /runs/{id}) p50", fmt(o["poll_p50_ms"], "ms"), fmt(a["poll_p50_ms"], "ms"),
            f"{o['poll_p50_ms'] / a['poll_p50_ms']:.1f}x", "-", None),
        row("poll p99", fmt(o["poll_p99_ms"], "ms"), fmt(a["poll_p99_ms"], "ms"),
            f"{o['poll_p99_ms'] / a['poll_p99_ms']:.1f}x", "-", None),
        row("submit to end seen (end-to-end latency), p50", fmt(o["run_p50_ms"], "ms"), fmt(a["run_p50_ms"], "ms"),
            f"{o['run_p50_ms'] / a['run_p50_ms']:.1f}x", "<= 2x", o["run_p50_ms"] / a["run_p50_ms"] <= 2),
        row("submit to end seen, p99", fmt(o["run_p99_ms"], "ms"), fmt(a["run_p99_ms"], "ms"),
            f"{o['run_p99_ms'] / a['run_p99_ms']:.1f}x", "-", None),
        row("error rate (non-2xx, transport errors, runs not succeeded)", f"{o['error_rate']:.2%}",
            f"{a['error_rate']:.2%}", "-", "0 %", o["error_rate"] == 0),
        row("API RSS start / end / max", f"{o['rss_start_mb']:.0f} / {o['rss_end_mb']:.0f} / {o['rss_max_mb']:.0f} MB",
            f"{a['rss_start_mb']:.0f} / {a['rss_end_mb']:.0f} / {a['rss_max_mb']:.0f} MB", "-", "flat", None),
        row("API RSS, mean of the last window vs the first", f"{growth:+.1%}", f"{a['rss_growth']:+.1%}", "-",
            f"< +{r['memory_growth_target']:.0%}", growth < r["memory_growth_target"]),
        "",
        f"API RSS every 10 s (MB): {', '.join(f'{m:.0f}' for m in o['rss_series_mb'])}",
    ] + ([
        "",
        "Where the time goes: in a closed loop the end-to-end latency is the clients (32) over the runs/s, so it "
        "is set by the server's CPU per run. Ours runs every workflow inside the API process (embedded mode: the "
        "run, its steps and events in SQLite); the anchor runs nothing.", "",
        "| per finished run | ours | anchor |", "| --- | --- | --- |",
        f"| server process CPU (/proc) | {o['server_cpu_ms_per_run']:.1f} ms | {a['server_cpu_ms_per_run']:.1f} ms |",
        f"| server busy (CPU s per s; one process, so the GIL caps it near 1.0) | {o['server_cpu_share']:.2f} | "
        f"{a['server_cpu_share']:.2f} |",
        f"| load client CPU (this process) | {o['client_cpu_ms_per_run']:.1f} ms | {a['client_cpu_ms_per_run']:.1f} ms |",
    ] if "server_cpu_ms_per_run" in o and "server_cpu_ms_per_run" in a else [])


def section_scale(r: dict) -> list[str]:
    a = r["anchor"]
    out = [f"{r['workflows']:,} workflows (one version each), {r['runs']:,} runs, {r['steps']:,} steps in a fresh "
           f"PostgreSQL database (COPY: {r['load_seconds']:.0f} s). Median (and p95) of {a['n'] // 2} requests each "
           "through the API (the FastAPI app in-process, every request a full HTTP request). Anchor: a bare "
           "`SELECT 1` round trip through the same SQLAlchemy engine.", "", HEAD]
    for name, x in r["results"].items():
        out.append(row(f"`{name}`", f"{x['median_ms']:.2f} ms (p95 {x['p95_ms']:.2f})",
                       f"{a['median_ms']:.2f} ms", f"{x['ratio']:.1f}x", f"< {r['target_ms']:g} ms", x["met"]))
    out += ["", "Query plans:"] + [f"- {q}: `{p}`" for q, p in r.get("plans", {}).items()]
    return out


def section_capacity(r: dict) -> list[str]:
    cpu = r["cpu_ms_per_run"]
    steps = r["steps_per_run"]
    head = "| figure | per run | per step |\n| --- | --- | --- |"
    lines = [
        f"A {steps}-step workflow ({r['llm_calls_per_run']} LLM calls to the stand-in server, answered at once) "
        f"through the API: {r['clients']} closed-loop clients, each submits a run and polls it every "
        f"{r['poll_s']:g} s ({r['api_requests_per_run']:.1f} API requests a run); {r['runs']} runs measured after a "
        f"warm-up: {r['runs_per_s']:.1f} runs/s, submit-to-end p50 {r['p50_s'] * 1000:.0f} ms, "
        f"p99 {r['p99_s'] * 1000:.0f} ms. No anchor: these are the costs docs/scaling.md sizes fleets with.", "",
        head]
    for name in ("api", "driver", "llm", "redis", "postgres"):
        lines.append(f"| CPU, {name} | {cpu[name]:.1f} ms | {cpu[name] / steps:.1f} ms |")
    lines += [f"| CPU, all AgentFlow processes + Postgres | {sum(cpu.values()):.1f} ms | "
              f"{sum(cpu.values()) / steps:.1f} ms |",
              f"| Redis commands | {r['redis_ops_per_run']:.0f} | {r['redis_ops_per_run'] / steps:.1f} |",
              f"| Redis network bytes (in + out) | {r['redis_bytes_per_run'] / 1024:.1f} KiB | "
              f"{r['redis_bytes_per_run'] / steps / 1024:.1f} KiB |",
              f"| Postgres transactions | {r['pg_commits_per_run']:.1f} | {r['pg_commits_per_run'] / steps:.1f} |",
              f"| Postgres rows written | {r['pg_rows_per_run']:.1f} | {r['pg_rows_per_run'] / steps:.1f} |",
              f"| Postgres bytes stored (tables + indexes) | {r['pg_bytes_per_run'] / 1024:.1f} KiB | "
              f"{r['pg_bytes_per_run'] / steps / 1024:.1f} KiB |", "",
              "Redis commands per run, by command: " + ", ".join(
                  f"{k} {v:.1f}" for k, v in list(r["redis_ops_by_command"].items())[:12]), ""]
    if "fleet" in r:
        a = r["assumptions"]
        lines += [f"Fleet per HLD phase from these costs (docs/scaling.md): each concurrent user starts a run every "
                  f"{a['user_run_every_s']:g} s, a model call takes {a['llm_seconds']:g} s, pods of "
                  f"{a['cores_per_pod']:g} CPU at {a['target_cpu']:.0%}, {a['slots_per_pod']} model calls in hand per "
                  f"LLM worker pod (threads); drivers by CPU (a paused run holds none); at least 2 pods of each.", "",
                  "| phase | users | runs/s | runs in flight | API pods | driver pods | LLM worker pods | "
                  "Redis ops/s | Redis CPU | Postgres tx/s | Postgres CPU | Postgres growth |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for phase, f in r["fleet"].items():
            lines.append(f"| {phase} | {f['users']:,} | {f['runs_per_s']:.1f} | {f['runs_in_flight']:.0f} | "
                         f"{f['api_pods']} | {f['driver_pods']} | {f['llm_pods']} | {f['redis_ops_per_s']:,.0f} | "
                         f"{f['redis_cores']:.2f} cores | {f['pg_tx_per_s']:,.0f} | {f['pg_cores']:.2f} cores | "
                         f"{f['pg_gib_per_day']:.1f} GiB/day |")
    return lines


SECTIONS = {"engine_overhead": section_engine, "throughput": section_throughput, "api_submit": section_submit,
            "waiting_runs": section_waiting, "sse_watchers": section_sse,
            "ratelimit": section_ratelimit, "load": section_load, "scale": section_scale,
            "capacity": section_capacity}


def section_studio() -> list[str]:
    """Studio's 200-node figures come from the browser test that measures them (tests/browser)."""
    perf = ROOT_DIR / "tests" / "browser" / "artifacts" / "perf-200-nodes.json"
    if not perf.exists():
        return ["## Studio with a 200-node workflow", "", "Not measured yet: run `make test` (the browser tests).", ""]
    d = json.loads(perf.read_text())
    return ["## Studio with a 200-node workflow (`tests/browser`, Debian Chromium)", "",
            "Anchor: the same pointer moves without a drag (what driving the browser itself costs).", "",
            "| figure | ours | anchor | ratio | target | met? |", "| --- | --- | --- | --- | --- | --- |",
            f"| render until all {d['nodes']} nodes are visible (incl. auto-layout) | {d['render_seconds']:.2f} s | - | - | < 5 s | "
            f"{'yes' if d['render_seconds'] < 5 else '**no**'} |",
            f"| one drag step | {d['ms_per_drag_step']:.1f} ms | {d['ms_per_pointer_move_without_drag']:.1f} ms | "
            f"{d['ms_per_drag_step'] / d['ms_per_pointer_move_without_drag']:.1f}x | - | - |",
            f"| frame time during the drag, mean / longest | {d['mean_frame_ms_during_drag']:.1f} / "
            f"{d['longest_frame_ms_during_drag']:.1f} ms | 16.7 ms (60 fps) | - | - | - |", ""]


def write_results(outcomes: dict, info: dict, quick: bool, started: float, path: Path = RESULTS) -> None:
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = ["# Benchmark results", "",
             "Written by `make bench` (`bench/run_all.py`); do not edit by hand. Every figure is measured next to an "
             "anchor in the same run on the same machine; the ratio is what carries over to other machines.", "",
             f"- written: {when}; each section says when it was measured (`--only` re-runs some benches and "
             "keeps the others' last figures, from bench/results.json)"
             + ("; **quick sizes** (`--quick`), not the reference run" if quick else ""),
             f"- machine: {info['cpus']} CPUs ({info['cpu']}), {info['memory']} RAM, {info['arch']}, {info['os']}",
             f"- software: Python {info['python']}, {info['postgres']}, {info['redis']}; commit {info['commit']}",
             "- the machine is shared and was loaded by other work while these ran (2 cores for several sessions): "
             "absolute figures swing by 2x between minutes; the ratios, each measured against its anchor in the "
             "same run (alternating rounds, median round), are what counts.", ""]
    summary = []
    for name, (title, *_rest) in BENCHES.items():
        if name not in outcomes:  # never run: `--only` keeps the others' figures in bench/results.json
            continue
        res = outcomes[name]
        lines += [f"## {title} (`bench/{name}.py`)", ""]
        if res.get("error"):
            lines += [f"**Did not complete**: {res['error']}", ""]
            summary.append((title, "did not complete"))
            continue
        try:
            body = SECTIONS[name](res["result"])
        except Exception as exc:  # a bench whose figures changed shape: say so, keep the rest
            body = [f"Figures could not be tabulated ({type(exc).__name__}: {exc}); raw output:", "", "```",
                    res.get("stdout", "").strip(), "```"]
        when = res.get("date", "?") + ("; quick sizes" if res.get("quick") else "")
        lines += body + ["", f"_{res['seconds']:.0f} s, measured {when}_", ""]
        missed = [ln for ln in body if ln.endswith("| **no** |")]
        summary.append((title, f"{len(missed)} target(s) missed" if missed else "all targets met"))
    lines += section_studio()
    lines[9:9] = ["## Summary", "", "| bench | outcome |", "| --- | --- |"] + \
                 [f"| {t} | {o} |" for t, o in summary] + [""]
    path.write_text("\n".join(lines).rstrip() + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    ap.add_argument("--only", help="comma-separated bench names")
    ap.add_argument("--no-write", action="store_true", help="do not rewrite bench/RESULTS.md")
    ap.add_argument("--render", action="store_true", help="only rewrite RESULTS.md from bench/results.json")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--kwargs", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:  # child process: one bench
        run_one(args.one, json.loads(args.kwargs), Path(args.out))
        return 0

    if args.render:
        kept = json.loads(OUTCOMES.read_text())
        write_results(kept, machine(), any(o.get("quick") for o in kept.values()), time.time())
        return 0
    names = args.only.split(",") if args.only else list(BENCHES)
    unknown = set(names) - set(BENCHES)
    if unknown:
        ap.error(f"unknown bench(es): {', '.join(sorted(unknown))}")
    started = time.time()
    info = machine()
    print(f"machine: {info['cpus']} CPUs ({info['cpu']}), {info['memory']}, Python {info['python']}", flush=True)
    outcomes: dict[str, dict] = {}
    for name in names:
        title, full, quick = BENCHES[name]
        kwargs = quick if args.quick else full
        print(f"\n=== {title} (bench/{name}.py) ===", flush=True)
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
            out = Path(f.name)
        t0 = time.time()
        proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--one", name,
                               "--kwargs", json.dumps(kwargs), "--out", str(out)], cwd=ROOT)
        seconds = time.time() - t0
        try:
            data = json.loads(out.read_text()) if out.stat().st_size else None
        finally:
            out.unlink(missing_ok=True)
        if proc.returncode != 0 or data is None:
            outcomes[name] = {"error": f"exit code {proc.returncode} (see the output above)", "seconds": seconds}
            print(f"=== {name} FAILED (exit {proc.returncode}) ===", flush=True)
            continue
        outcomes[name] = {"result": data["result"], "stdout": data["stdout"], "seconds": seconds,
                          "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "quick": args.quick}
    if not args.no_write:
        previous = json.loads(OUTCOMES.read_text()) if OUTCOMES.exists() else {}
        kept = {k: v for k, v in {**previous, **outcomes}.items() if k in BENCHES}
        OUTCOMES.write_text(json.dumps(kept, indent=1, default=str) + "\n")
        write_results(kept, info, any(o.get("quick") for o in kept.values()), started)
        print(f"\nwrote {RESULTS.relative_to(ROOT)}")
    failed = [n for n, o in outcomes.items() if o.get("error")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
