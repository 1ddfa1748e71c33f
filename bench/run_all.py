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
    "scale": ("Scale: 100,000 workflows, 1,000,000 steps", {"workflows": 100_000, "steps": 1_000_000, "samples": 200},
              {"workflows": 10_000, "steps": 100_000, "samples": 50}),
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
        "Anchor: the same triage graph written by hand in LangGraph, instant node functions in both.", "",
        HEAD,
        row("one invoke of the triage graph", fmt(r["agentflow_ms"], "ms", 3), fmt(r["hand_written_ms"], "ms", 3),
            f"{r['invoke_ratio']:.2f}x", "<= 1.3x", r["invoke_ratio"] <= 1.3),
        row("compile-cache hit (anchor: a cold build)", fmt(r["cache_hit_ms"], "ms", 4), fmt(r["cold_build_ms"], "ms"),
            f"{r['cache_speedup']:,.0f}x faster", ">= 50x", r["cache_speedup"] >= 50),
    ]


def section_throughput(r: dict) -> list[str]:
    runs, chain = r["runs"], r["chain"]
    return [
        "Anchor: a raw Celery chain of 4 no-op tasks on the same broker and workers (2 workers). "
        f"Chains and runs alternate over {len(r.get('ratios', [r['ratio']]))} rounds; shown is the round with the median ratio "
        f"(ratios per round: {', '.join(f'{x:.2f}' for x in r.get('ratios', [r['ratio']]))}).", "",
        HEAD,
        row("runs/s, 4-node workflow, instant nodes", fmt(runs["per_s"], "/s"), fmt(chain["per_s"], "/s"),
            f"{r['ratio']:.2f}x", ">= 0.5x", r["ratio"] >= 0.5),
        row("submit-to-finish p50", fmt(runs["p50"] * 1000, "ms"), fmt(chain["p50"] * 1000, "ms"),
            f"{runs['p50'] / chain['p50']:.2f}x", "-", None),
        row("submit-to-finish p99", fmt(runs["p99"] * 1000, "ms"), fmt(chain["p99"] * 1000, "ms"),
            f"{runs['p99'] / chain['p99']:.2f}x", "-", None),
    ]


def section_submit(r: dict) -> list[str]:
    s, a = r["submit"], r["anchor"]
    return [
        "Anchor: a bare FastAPI endpoint that only enqueues a Celery no-op; both under uvicorn, 16 clients; "
        f"{len(r.get('rounds', [1]))} alternating rounds, the round with the median ratio shown "
        f"(each round: {', '.join(f'{x:.2f}x' for x in r.get('rounds', [r['ratio']]))}).", "",
        HEAD,
        row("POST /workflows/{id}/runs, requests/s", fmt(s["per_s"], "/s"), fmt(a["per_s"], "/s"),
            f"{r['ratio']:.2f}x", ">= 0.7x", r["ratio"] >= 0.7),
        row("latency p50", fmt(s["p50"] * 1000, "ms"), fmt(a["p50"] * 1000, "ms"), f"{s['p50'] / a['p50']:.2f}x", "-",
            None),
        row("latency p99", fmt(s["p99"] * 1000, "ms"), fmt(a["p99"] * 1000, "ms"), f"{s['p99'] / a['p99']:.2f}x", "-",
            None),
        row("errors", str(s["errors"]), str(a["errors"]), "-", "0", s["errors"] == 0),
    ]


def section_ratelimit(r: dict) -> list[str]:
    rows = r.get("rows") or []
    if not rows:
        return ["The rate-limit bench printed no rows (see the log)."]
    rate, burst = rows[0]["rate"], rows[0]["burst"]
    out = [f"Anchors: the configured rate ({fmt(rate)} msg/s, burst {burst}, sub-queues paid 3 : free 1) for "
           "accuracy; a bare Redis INCR round trip, measured by as many processes at once, for cost.", "", HEAD]
    for x in rows:
        n = x["workers"]
        out.append(row(f"achieved rate, {n} worker(s)", fmt(x["ratio"] * rate, "/s"), fmt(rate, "/s"),
                       f"{x['ratio']:.3f}", "0.97 to 1.00", 0.97 <= x["ratio"] <= 1.0))
        out.append(row(f"most grants in any 1 s, {n} worker(s)", str(x["worst_1s"]), f"{fmt(rate)} + burst {burst}",
                       f"{x['worst_1s'] / (rate + burst):.2f}", "<= rate + burst", x["worst_1s"] <= rate + burst))
        out.append(row(f"share error (weights 3:1), {n} worker(s)", f"{x['share_err_pct']:.2f} %", "exact share",
                       "-", "-", None))
        out.append(row(f"try_acquire cost, {n} worker(s)", fmt(x["acquire_us"], "us"), fmt(x["incr_us"], "us"),
                       f"{x['acquire_x_incr']:.2f}x", "<= 2x", x["acquire_x_incr"] <= 2))
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
        row("submit to end seen, p50", fmt(o["run_p50_ms"], "ms"), fmt(a["run_p50_ms"], "ms"),
            f"{o['run_p50_ms'] / a['run_p50_ms']:.1f}x", "-", None),
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
    ]


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


SECTIONS = {"engine_overhead": section_engine, "throughput": section_throughput, "api_submit": section_submit,
            "ratelimit": section_ratelimit, "load": section_load, "scale": section_scale}


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
             f"- date: {when}; total time {(time.time() - started) / 60:.1f} min"
             + ("; **quick sizes** (`--quick`), not the reference run" if quick else ""),
             f"- machine: {info['cpus']} CPUs ({info['cpu']}), {info['memory']} RAM, {info['arch']}, {info['os']}",
             f"- software: Python {info['python']}, {info['postgres']}, {info['redis']}; commit {info['commit']}", ""]
    summary = []
    for name, (title, *_rest) in BENCHES.items():
        if name not in outcomes:
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
        lines += body + ["", f"_{res['seconds']:.0f} s_", ""]
        missed = [ln for ln in body if ln.endswith("| **no** |")]
        summary.append((title, f"{len(missed)} target(s) missed" if missed else "all targets met"))
    lines += section_studio()
    lines[8:8] = ["## Summary", "", "| bench | outcome |", "| --- | --- |"] + \
                 [f"| {t} | {o} |" for t, o in summary] + [""]
    path.write_text("\n".join(lines).rstrip() + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    ap.add_argument("--only", help="comma-separated bench names")
    ap.add_argument("--no-write", action="store_true", help="do not rewrite bench/RESULTS.md")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--kwargs", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:  # child process: one bench
        run_one(args.one, json.loads(args.kwargs), Path(args.out))
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
        outcomes[name] = {"result": data["result"], "stdout": data["stdout"], "seconds": seconds}
    if not args.no_write:
        write_results(outcomes, info, args.quick, started)
        print(f"\nwrote {RESULTS.relative_to(ROOT)}")
    failed = [n for n, o in outcomes.items() if o.get("error")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
