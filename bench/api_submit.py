"""API submit rate: POST /workflows/{id}/runs (distributed mode: verify the JWT, authorize,
store a run row in Postgres, enqueue) vs a bare FastAPI endpoint that verifies the same JWT
and enqueues a Celery no-op, both under uvicorn (one process each), driven by the same
client in the same run, JWT verification ON on both sides (AGENTFLOW_AUTH=required,
HS256). Target >= 0.8x. The deny path: the same requests with a token signed by another
key (401 on both sides).

The two alternate for ROUNDS rounds (this machine's speed drifts over a minute), and the
round with the median ratio is reported, next to every round's ratio.

Where the time goes: each side's round records, per request, the CPU of its server process,
of the Postgres backends, of Redis, and of this load client (/proc, INFO cpu), and the Redis
commands sent: the client and both servers share this machine's cores.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ROOT, fresh_env, machine, pct  # noqa: E402

CONCURRENCY = 16
ROUNDS = 3
SECONDS = float(sys.argv[1]) if len(sys.argv) > 1 else 10.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(env: dict, app: str, port: int, factory: bool = False) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "uvicorn", app, "--port", str(port), "--log-level", "warning", "--no-access-log"]
    if factory:
        cmd.append("--factory")
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # its own process group: the CPU meter reads it
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/docs", timeout=1)
            return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"{app} did not start")


async def drive(url: str, body: dict, seconds: float, token: str = "", expect: int = 202) -> dict:
    lat: list[float] = []
    errors = 0
    codes: dict[int, int] = {}
    stop = time.perf_counter() + seconds
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=CONCURRENCY),
                                 headers=headers) as client:
        async def one_client():
            nonlocal errors
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                r = await client.post(url, json=body)
                lat.append(time.perf_counter() - t0)
                if r.status_code != expect:
                    errors += 1
                    codes[r.status_code] = codes.get(r.status_code, 0) + 1
                    if codes[r.status_code] == 1:
                        print(f"  {url}: {r.status_code} {r.text[:200]}", file=sys.stderr)
        t0 = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(CONCURRENCY)))
        elapsed = time.perf_counter() - t0
    return {"per_s": (len(lat) - errors) / elapsed, "p50": pct(lat, 50), "p99": pct(lat, 99), "errors": errors, "n": len(lat)}


def metered(meter, url: str, body: dict, seconds: float, token: str) -> dict:
    """drive() with the CPU of every part per request (ms) and the Redis commands per request."""
    before, client0 = meter.snap(), time.process_time()
    out = asyncio.run(drive(url, body, seconds, token))
    used, n = meter.delta(before, meter.snap()), max(1, out["n"])
    out["costs"] = {"server_cpu_ms": used["worker_cpu_s"] * 1000 / n, "pg_cpu_ms": used["pg_cpu_s"] * 1000 / n,
                    "redis_cpu_ms": used["redis_cpu_s"] * 1000 / n,
                    "client_cpu_ms": (time.process_time() - client0) * 1000 / n,
                    "redis_ops": sum(used["cmds"].values()) / n,
                    "redis_top": {k: v / n for k, v in sorted(used["cmds"].items(), key=lambda kv: -kv[1])[:5]}}
    return out


def main(seconds: float = SECONDS) -> dict:
    spec = json.loads((ROOT / "examples" / "triage.json").read_text())
    with fresh_env(redis_db=13) as env:
        import jwt as pyjwt

        secret = "bench-" + "k" * 40
        env["AGENTFLOW_AUTH"] = "required"
        env["AGENTFLOW_JWT_SECRET"] = secret
        env["AGENTFLOW_LOAD_EXAMPLES"] = "0"
        # the abuse limits would (rightly) throttle one benchmarking client; measure the path, not the limiter
        env["AGENTFLOW_RATE_IP_PER_MINUTE"] = env["AGENTFLOW_RATE_TENANT_PER_MINUTE"] = "10000000"
        env["AGENTFLOW_RATE_IP_BURST"] = env["AGENTFLOW_RATE_TENANT_BURST"] = "100000"
        p1, p2 = free_port(), free_port()
        bare = serve(env, "bench.bare_app:app", p1)
        ours = serve(env, "agentflow.api.main:create_app", p2, factory=True)
        try:
            now = int(time.time())
            claims = {"sub": "bench", "tenant": "default", "role": "admin", "iat": now, "nbf": now - 1,
                      "exp": now + 3600, "jti": "bench"}  # what `agentflow token create` signs
            token = pyjwt.encode(claims, secret, algorithm="HS256")
            forged = pyjwt.encode(claims, "another-" + "k" * 40, algorithm="HS256")
            auth = {"Authorization": f"Bearer {token}"}
            r = httpx.post(f"http://127.0.0.1:{p2}/workflows", json=spec, timeout=30, headers=auth)
            assert r.status_code in (200, 201), r.text
            body = {"input": {"user_input": "hello", "metadata": {"customer": "acme"}}}
            bare_url, ours_url = f"http://127.0.0.1:{p1}/enqueue", f"http://127.0.0.1:{p2}/workflows/{spec['id']}/runs"
            asyncio.run(drive(bare_url, {}, 2, token))  # warm up both
            asyncio.run(drive(ours_url, body, 2, token))
            from bench.throughput import Meter

            ours_meter, bare_meter = Meter(env, {ours.pid}), Meter(env, {bare.pid})
            rounds = []
            for i in range(ROUNDS):
                if i % 2 == 0:  # alternate who goes first
                    anchor = metered(bare_meter, bare_url, {}, seconds, token)
                    submit = metered(ours_meter, ours_url, body, seconds, token)
                else:
                    submit = metered(ours_meter, ours_url, body, seconds, token)
                    anchor = metered(bare_meter, bare_url, {}, seconds, token)
                rounds.append({"anchor": anchor, "submit": submit, "ratio": submit["per_s"] / anchor["per_s"]})
            deny_anchor = asyncio.run(drive(bare_url, {}, seconds / 2, forged, expect=401))
            deny_ours = asyncio.run(drive(ours_url, body, seconds / 2, forged, expect=401))
        finally:
            for p in (bare, ours):
                p.terminate()
                p.wait(timeout=20)
    median = sorted(rounds, key=lambda r: r["ratio"])[len(rounds) // 2]
    anchor, submit, ratio = median["anchor"], median["submit"], median["ratio"]
    print(f"API submit, {CONCURRENCY} concurrent clients for {seconds:.0f} s each, {ROUNDS} alternating rounds "
          f"({machine()})")
    print("  ratio of each round           : " + ", ".join(f"{r['ratio']:.2f}x" for r in rounds) + "  (median shown)")
    print(f"  bare FastAPI + Celery enqueue : {anchor['per_s']:.0f} req/s  p50 {anchor['p50']*1000:.1f} ms  p99 {anchor['p99']*1000:.1f} ms  errors {anchor['errors']}")
    print(f"  POST /workflows/{{id}}/runs    : {submit['per_s']:.0f} req/s  p50 {submit['p50']*1000:.1f} ms  p99 {submit['p99']*1000:.1f} ms  errors {submit['errors']}")
    print(f"  ratio                         : {ratio:.2f}x   (target >= 0.8x)")
    print("  per request (ours / bare)     : " + ", ".join(
        f"{k.removesuffix('_ms').replace('_', ' ')} {submit['costs'][k]:.2f} / {anchor['costs'][k]:.2f} ms"
        for k in ("server_cpu_ms", "pg_cpu_ms", "redis_cpu_ms", "client_cpu_ms")))
    print(f"  deny path (forged token, 401) : ours {deny_ours['per_s']:.0f} req/s, bare {deny_anchor['per_s']:.0f} req/s "
          f"({deny_ours['per_s'] / deny_anchor['per_s']:.2f}x); p50 {deny_ours['p50']*1000:.1f} vs "
          f"{deny_anchor['p50']*1000:.1f} ms; unexpected codes {deny_ours['errors']} / {deny_anchor['errors']}")
    return {"anchor": anchor, "submit": submit, "ratio": ratio, "rounds": [r["ratio"] for r in rounds],
            "deny": {"ours": deny_ours, "anchor": deny_anchor, "ratio": deny_ours["per_s"] / deny_anchor["per_s"]}}


if __name__ == "__main__":
    main()
