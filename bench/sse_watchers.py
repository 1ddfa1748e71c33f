"""Many SSE watchers on one API process: W (default 10,000) concurrent GET /runs/{id}/events
streams on one `agentflow serve` (embedded, SQLite), from a load tool on this machine (this
script: raw asyncio sockets, no HTTP library, so the client is cheap next to the server).

R runs (default 100) of input -> human -> aggregator are started and left waiting for their
person; W/R watchers follow each. Once every watcher has its stream open (it has read the
replayed `waiting` event), the server's RSS growth over the idle server is the memory per
watcher. Then every run is answered (POST /runs/{id}/resume), one after the other, and each
watcher records when its `end` event arrives: the event delay is that instant minus the
moment its run's answer was accepted (so it includes the run's last step, an aggregator).
Target: p99 under 1 s. Bounded: watchers that get nothing within `deadline` s count as lost.

Anchor for the delay: one watcher per run, the same runs, the same server (a lone watcher's
delay is what the run itself costs; the difference is what the 10,000 watchers add).
"""

from __future__ import annotations

import asyncio
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import machine, pct  # noqa: E402
from bench.load import free_port, rss_mb, start  # noqa: E402

SPEC = {"id": "watched", "name": "watched by many", "start_node": "input",
        "nodes": [{"id": "input", "type": "input"},
                  {"id": "ask", "type": "human", "config": {"prompt": "Go ahead for {user_input}?"}},
                  {"id": "final", "type": "aggregator", "config": {"fields": ["approval", "user_input"]}}],
        "edges": [{"from": "input", "to": "ask"}, {"from": "ask", "to": "final"}]}


class Watcher:
    __slots__ = ("run_id", "opened", "ended_at", "error", "writer")

    def __init__(self, run_id: str):
        self.run_id, self.opened, self.ended_at, self.error, self.writer = run_id, False, None, None, None


async def watch(port: int, w: Watcher, opened: asyncio.Event, counter: list, gate: asyncio.Semaphore) -> None:
    try:
        async with gate:  # a bounded number of handshakes at once (the listen backlog)
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            w.writer = writer
            writer.write(f"GET /runs/{w.run_id}/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n"
                         f"\r\n".encode())
            await writer.drain()
            while True:  # headers and the replay, up to the `waiting` event
                line = await reader.readline()
                if not line:
                    raise ConnectionError("closed before the waiting event")
                if line.startswith(b"event: waiting"):
                    break
        w.opened = True
        counter[0] += 1
        if counter[0] == counter[1]:
            opened.set()
        while True:
            line = await reader.readline()
            if not line:
                raise ConnectionError("closed before the end event")
            if line.startswith(b"event: end"):
                w.ended_at = time.time()
                break
        writer.close()
    except Exception as exc:  # noqa: BLE001 - counted, reported
        w.error = f"{type(exc).__name__}: {exc}"[:200]
        counter[0] += 0 if w.opened else 1  # a failed watcher must not keep the others waiting
        if counter[0] == counter[1]:
            opened.set()


async def start_runs(base: str, n: int) -> list[str]:
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        ids = []
        for i in range(n):
            r = await client.post(f"/workflows/{SPEC['id']}/runs", json={"input": {"user_input": f"user {i}"}})
            r.raise_for_status()
            ids.append(r.json()["run_id"])
        deadline = time.time() + 120
        pending = set(ids)
        while pending and time.time() < deadline:
            for rid in list(pending):
                if (await client.get(f"/runs/{rid}")).json().get("status") == "waiting":
                    pending.discard(rid)
            await asyncio.sleep(0.2)
        if pending:
            raise RuntimeError(f"{len(pending)} runs never reached `waiting`")
        return ids


async def phase(base: str, port: int, pid: int, run_ids: list[str], per_run: int, deadline: float) -> dict:
    watchers = [Watcher(rid) for rid in run_ids for _ in range(per_run)]
    opened = asyncio.Event()
    counter = [0, len(watchers)]
    gate = asyncio.Semaphore(256)
    rss0 = rss_mb(pid)
    t0 = time.perf_counter()
    tasks = [asyncio.create_task(watch(port, w, opened, counter, gate)) for w in watchers]
    try:
        await asyncio.wait_for(opened.wait(), timeout=deadline)
    except asyncio.TimeoutError:
        pass
    open_s = time.perf_counter() - t0
    await asyncio.sleep(2)
    rss1 = rss_mb(pid)
    n_open = sum(w.opened and w.error is None for w in watchers)
    answered: dict[str, float] = {}
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        for rid in run_ids:
            r = await client.post(f"/runs/{rid}/resume", json={"node": "ask", "choice": "approve"})
            if r.status_code == 202:
                answered[rid] = time.time()
    done, _ = await asyncio.wait(tasks, timeout=deadline)
    for t in tasks:
        if not t.done():
            t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    delays = [w.ended_at - answered[w.run_id] for w in watchers if w.ended_at and w.run_id in answered]
    errors: dict[str, int] = {}
    for w in watchers:
        if w.error:
            k = w.error.split(":")[0]
            errors[k] = errors.get(k, 0) + 1
    return {"watchers": len(watchers), "opened": n_open, "open_seconds": open_s, "received": len(delays),
            "lost": len(watchers) - len(delays), "errors": errors,
            "delay_p50": pct(delays, 50), "delay_p99": pct(delays, 99), "delay_max": max(delays) if delays else None,
            "rss_idle_mb": rss0, "rss_watching_mb": rss1,
            "kb_per_watcher": (rss1 - rss0) * 1024 / max(1, n_open), "answered": len(answered)}


def main(watchers: int = 10_000, runs: int = 100, deadline: float = 120.0) -> dict:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, 2 * watchers + 1000))
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))  # the server inherits it
    home = tempfile.mkdtemp(prefix="af-sse-")
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(AGENTFLOW_HOME=home, AGENTFLOW_AUTH="off", AGENTFLOW_LOAD_EXAMPLES="0",
               AGENTFLOW_RATE_IP_PER_MINUTE="0", AGENTFLOW_RATE_TENANT_PER_MINUTE="0", PYTHONUNBUFFERED="1")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = start([sys.executable, "-m", "agentflow.cli", "serve", "--port", str(port), "--log-level", "warning"],
                   env, port)
    try:
        r = httpx.post(f"{base}/workflows", json=SPEC, timeout=30)
        assert r.status_code in (200, 201), r.text
        anchor_ids = asyncio.run(start_runs(base, runs))
        anchor = asyncio.run(phase(base, port, server.pid, anchor_ids, 1, deadline))
        ids = asyncio.run(start_runs(base, runs))
        many = asyncio.run(phase(base, port, server.pid, ids, watchers // runs, deadline))
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except Exception:  # noqa: BLE001
            server.kill()
    print(f"SSE watchers on one `agentflow serve` (embedded), nofile limit {want} ({machine()})")
    for label, res in (("anchor: 1 watcher per run", anchor), (f"{many['watchers']:,} watchers", many)):
        print(f"  {label:<26}: {res['opened']:,} open in {res['open_seconds']:.1f} s, {res['received']:,} got `end`, "
              f"lost {res['lost']:,} {res['errors'] or ''}; delay p50 {res['delay_p50'] * 1000:.0f} ms, "
              f"p99 {res['delay_p99'] * 1000:.0f} ms, max {(res['delay_max'] or 0) * 1000:.0f} ms")
    print(f"  API RSS idle {many['rss_idle_mb']:.0f} MB, with {many['opened']:,} watchers {many['rss_watching_mb']:.0f} MB: "
          f"{many['kb_per_watcher']:.1f} KB per watcher")
    return {"anchor": anchor, "many": many, "runs": runs, "nofile": want}


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10_000)
