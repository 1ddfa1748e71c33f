"""Why the limiter talks to Redis its own way: its clients against redis-py's, same script.

    .venv/bin/python bench/redis_clients.py [--redis-url URL] [--n 4000]

The figures ratelimit/resp.py and ratelimit/redis.py quote in their docstrings:

  async   one API request's limit check (the caller's address and tenant: two EVALSHAs
          of the acquire script), 1 and 32 concurrent callers on one event loop:
          - resp.MultiplexedConnection (what RedisLimiter.try_acquire_each_async uses)
          - redis.asyncio (hiredis parser) pipeline of two `evalsha`
          - redis.asyncio's pool with the limiter's pre-packed command
  sync    one try_acquire (grant path, 2 sub-queues, tokens) on one thread:
          - RedisLimiter's pre-packed EVALSHA on a pooled connection (what workers use)
          - redis-py's Script call (register_script; what RedisLimiter does for any
            client that is not a plain redis.Redis)

CPU is process time per check (what an API process or worker pays), wall the latency.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid

import redis.asyncio as aioredis

from agentflow.ratelimit.base import QueueLimits
from agentflow.ratelimit.redis import RedisLimiter
from agentflow.ratelimit.resp import bulk


def _timed(fn, n: int) -> tuple[float, float]:
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    return (time.perf_counter() - t0) / n * 1e6, (time.process_time() - c0) / n * 1e6


async def _atimed(check, n: int, conc: int) -> tuple[float, float]:
    await check()

    async def caller(k: int) -> None:
        for _ in range(k):
            await check()

    t0, c0 = time.perf_counter(), time.process_time()
    await asyncio.gather(*(caller(n // conc) for _ in range(conc)))
    return (time.perf_counter() - t0) / n * 1e6, (time.process_time() - c0) / n * 1e6


async def async_figures(lim: RedisLimiter, url: str, n: int) -> list[tuple[str, int, float, float]]:
    qs = [QueueLimits("api:ip:bench", max_requests_per_minute=1e9, burst_size=1000),
          QueueLimits("api:tenant:bench", max_requests_per_minute=1e9, burst_size=1000)]
    client = aioredis.Redis.from_url(url, max_connections=64)
    pool = aioredis.ConnectionPool.from_url(url, max_connections=64)
    sha = lim._acquire.sha

    async def multiplexed():
        return await lim.try_acquire_each_async(qs)

    async def pipeline():
        pipe = client.pipeline(transaction=False)
        reqs = [lim._request(q, None, 0, None) for q in qs]
        for plan, dyn, _ in reqs:
            pipe.evalsha(sha, len(plan.keys), *plan.keys, *dyn, *plan.args)
        replies = await pipe.execute(raise_on_error=False)
        return [lim._decision(q, req[2], r) for q, req, r in zip(qs, reqs, replies)]

    async def pooled_packed():
        reqs = [lim._request(q, None, 0, None) for q in qs]
        conn = await pool.get_connection()
        try:
            await conn.send_packed_command(b"".join(p.head + bulk(d) + p.tail for p, d, _ in reqs))
            replies = [await conn.read_response() for _ in reqs]
        finally:
            await pool.release(conn)
        return [lim._decision(q, req[2], r) for q, req, r in zip(qs, reqs, replies)]

    out = []
    for conc in (1, 32):
        for _round in range(2):  # alternate, so a noisy moment hits every client alike
            for name, check in (("resp.MultiplexedConnection", multiplexed),
                                ("redis.asyncio pipeline", pipeline),
                                ("redis.asyncio pool, pre-packed", pooled_packed)):
                wall, cpu = await _atimed(check, n, conc)
                out.append((name, conc, wall, cpu))
    await client.aclose()
    await pool.aclose()
    return out


def sync_figures(lim: RedisLimiter, n: int) -> list[tuple[str, int, float, float]]:
    q = QueueLimits("llm-bench", max_messages_per_second=1e9, burst_size=1000, max_tokens_per_minute=10**12,
                    sub_queues=(("paid", 3.0), ("free", 1.0)))
    out = []
    for _round in range(2):
        for name, fast in (("pre-packed EVALSHA", True), ("redis-py Script", False)):
            lim._fast = fast
            lim.try_acquire(q, "paid", 10, waiter="w")
            wall, cpu = _timed(lambda: [lim.try_acquire(q, "paid", 10, waiter="w") for _ in range(n)], n)
            out.append((name, 1, wall, cpu))
    lim._fast = True
    return out


def best(rows):
    """The lower CPU of the two rounds of each (client, concurrency)."""
    keep: dict = {}
    for name, conc, wall, cpu in rows:
        if (name, conc) not in keep or cpu < keep[(name, conc)][1]:
            keep[(name, conc)] = (wall, cpu)
    return keep


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--redis-url", default="redis://127.0.0.1:6379/13")
    ap.add_argument("--n", type=int, default=4000)
    args = ap.parse_args()
    lim = RedisLimiter(args.redis_url, key_prefix=f"af:bench-clients:{uuid.uuid4().hex[:8]}")
    try:
        rows = asyncio.run(async_figures(lim, args.redis_url, args.n)) + sync_figures(lim, args.n)
    finally:
        lim.clear()
    figures = best(rows)
    print(f"{'client':34s} {'callers':>7s} {'wall us':>8s} {'cpu us':>8s} {'cpu ratio':>9s}")
    base = {1: figures[("resp.MultiplexedConnection", 1)][1], 32: figures[("resp.MultiplexedConnection", 32)][1]}
    for (name, conc), (wall, cpu) in figures.items():
        ref = figures[("pre-packed EVALSHA", 1)][1] if name in ("pre-packed EVALSHA", "redis-py Script") else base[conc]
        print(f"{name:34s} {conc:7d} {wall:8.1f} {cpu:8.1f} {cpu / ref:8.2f}x")


if __name__ == "__main__":
    main()
