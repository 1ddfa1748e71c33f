"""Drive a limiter the way workers do, and measure what it let through.

Used by `tests/ratelimit` and `bench/ratelimit.py`. A worker (an OS process for Redis, a
thread for the in-memory limiter) keeps one pending task per sub-queue it serves; it asks
`try_acquire` for the task that is due first, and when told "not yet" it schedules that
task `retry_after` seconds later (what a Celery retry with a countdown does) instead of
sleeping in place. Every grant is recorded with the limiter's own clock (`Decision.at`,
Redis TIME in distributed mode).
"""

from __future__ import annotations

import multiprocessing as mp
import random
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable, Sequence

from .base import LimiterUnavailable, QueueLimits


@dataclass(frozen=True)
class Scenario:
    limits: QueueLimits
    workers: int = 4
    subs: tuple[str | None, ...] = (None,)   # each worker keeps one pending task per sub-queue
    tokens: int = 0                          # estimate reserved by each call
    usage: tuple[int, int] | None = None     # real usage reported to settle(), uniform in range
    call_seconds: float = 0.0                # time a granted call takes before settle()


@dataclass
class Result:
    grants: list[tuple[float, str, int]] = field(default_factory=list)  # (at, sub-queue, tokens used)
    calls: int = 0            # try_acquire calls
    acquire_seconds: float = 0.0   # time spent inside try_acquire
    unavailable: int = 0      # LimiterUnavailable errors seen (backend down)
    denials: dict[str, int] = field(default_factory=dict)   # reason -> count

    @property
    def times(self) -> list[float]:
        return [g[0] for g in self.grants]

    def merge(self, other: "Result") -> None:
        self.grants.extend(other.grants)
        self.calls += other.calls
        self.acquire_seconds += other.acquire_seconds
        self.unavailable += other.unavailable
        for k, v in other.denials.items():
            self.denials[k] = self.denials.get(k, 0) + v
        self.grants.sort()


def _work(limiter, sc: Scenario, seed: int, duration: float, start) -> Result:
    rng = random.Random(seed)
    res = Result()
    start()
    t_start = time.time()
    stop = t_start + duration
    pending = [[t_start, s, uuid.uuid4().hex] for s in sc.subs]
    lim = sc.limits
    while True:
        p = min(pending, key=lambda q: q[0])
        now = time.time()
        if p[0] >= stop:
            break
        if p[0] > now:
            time.sleep(p[0] - now)
        t0 = time.perf_counter()
        try:
            d = limiter.try_acquire(lim, p[1], sc.tokens, waiter=p[2])
        except LimiterUnavailable:
            res.unavailable += 1
            p[0] = time.time() + 0.05
            continue
        res.acquire_seconds += time.perf_counter() - t0
        res.calls += 1
        if d.allowed:
            used = rng.randint(*sc.usage) if sc.usage else 0
            if sc.call_seconds:
                time.sleep(sc.call_seconds)
            if sc.usage:
                try:
                    limiter.settle(lim, d, used)
                except LimiterUnavailable:
                    res.unavailable += 1
            res.grants.append((d.at, d.sub_queue or "", used))
            p[0], p[2] = time.time(), uuid.uuid4().hex
        else:
            res.denials[d.reason] = res.denials.get(d.reason, 0) + 1
            p[0] = time.time() + d.retry_after
    return res


def _process_main(redis_url, prefix, sc, seed, duration, barrier, out):
    from .redis import RedisLimiter
    limiter = RedisLimiter(redis_url, key_prefix=prefix)
    try:
        res = _work(limiter, sc, seed, duration, barrier.wait)
    except BaseException as e:  # report, do not hang the parent
        out.put((seed, e))
        raise
    out.put((seed, res))


def run_redis(redis_url: str, prefix: str, scenarios: Sequence[Scenario], duration: float,
              events: Sequence[tuple[float, Callable[[], None]]] = (),
              start_method: str = "spawn") -> list[Result]:
    """Run every scenario at once, `workers` OS processes each, for `duration` seconds.

    `events` are (seconds after start, callable) run in this process during the load."""
    ctx = mp.get_context(start_method)
    n = sum(sc.workers for sc in scenarios)
    barrier = ctx.Barrier(n + 1)
    out = ctx.Queue()
    procs, owner = [], {}
    seed = 0
    for i, sc in enumerate(scenarios):
        for _ in range(sc.workers):
            seed += 1
            owner[seed] = i
            procs.append(ctx.Process(target=_process_main, daemon=True,
                                     args=(redis_url, prefix, sc, seed, duration, barrier, out)))
    for p in procs:
        p.start()
    try:
        barrier.wait(timeout=60)
        _run_events(events)
        results = [Result() for _ in scenarios]
        for _ in procs:
            s, r = out.get(timeout=duration + 60)
            if isinstance(r, BaseException):
                raise RuntimeError(f"load worker {s} failed: {r!r}") from r
            results[owner[s]].merge(r)
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    return results


def run_threads(limiter, scenarios: Sequence[Scenario], duration: float,
                events: Sequence[tuple[float, Callable[[], None]]] = ()) -> list[Result]:
    """Same as run_redis, with threads sharing one limiter object (embedded mode)."""
    n = sum(sc.workers for sc in scenarios)
    barrier = threading.Barrier(n + 1)
    results = [Result() for _ in scenarios]
    lock = threading.Lock()
    errors: list[BaseException] = []

    def body(i, sc, seed):
        try:
            r = _work(limiter, sc, seed, duration, barrier.wait)
        except BaseException as e:
            errors.append(e)
            raise
        with lock:
            results[i].merge(r)

    threads, seed = [], 0
    for i, sc in enumerate(scenarios):
        for _ in range(sc.workers):
            seed += 1
            threads.append(threading.Thread(target=body, args=(i, sc, seed), daemon=True))
    for t in threads:
        t.start()
    barrier.wait(timeout=60)
    _run_events(events)
    for t in threads:
        t.join(timeout=duration + 60)
    if errors:
        raise RuntimeError(f"load thread failed: {errors[0]!r}") from errors[0]
    return results


def _run_events(events):
    t0 = time.time()
    for offset, fn in sorted(events, key=lambda e: e[0]):
        delay = t0 + offset - time.time()
        if delay > 0:
            time.sleep(delay)
        fn()


# ---------------------------------------------------------------------- figures

def steady(times: Sequence[float], warmup: float) -> list[float]:
    """Grant times from `warmup` seconds after the first one (drops the initial burst)."""
    ts = sorted(times)
    return [t for t in ts if t >= ts[0] + warmup] if ts else []


def achieved_rate(times: Sequence[float]) -> float:
    """(grants - 1) / (last - first): grants per second between the first and last."""
    ts = sorted(times)
    if len(ts) < 2 or ts[-1] <= ts[0]:
        return 0.0
    return (len(ts) - 1) / (ts[-1] - ts[0])


def worst_window(times: Sequence[float], width: float = 1.0) -> int:
    """Most grants in any half-open window [t, t + width)."""
    ts = sorted(times)
    best = j = 0
    for i in range(len(ts)):
        while j < len(ts) and ts[j] < ts[i] + width:
            j += 1
        best = max(best, j - i)
    return best


def shares(grants: Sequence[tuple[float, str, int]], t_from: float = float("-inf"),
           t_to: float = float("inf")) -> dict[str, float]:
    """Fraction of the grants in [t_from, t_to] that went to each sub-queue."""
    counts: dict[str, int] = {}
    for t, sub, _ in grants:
        if t_from <= t <= t_to:
            counts[sub] = counts.get(sub, 0) + 1
    total = sum(counts.values()) or 1
    return {s: c / total for s, c in counts.items()}


def share_error(grants, weights: dict[str, float], **window) -> float:
    """Largest relative error |share / expected - 1| over the weighted sub-queues."""
    got = shares(grants, **window)
    total_w = sum(weights.values())
    return max(abs(got.get(s, 0.0) / (w / total_w) - 1.0) for s, w in weights.items())


def worst_usage_window(grants: Sequence[tuple[float, str, int]], width: float = 60.0) -> int:
    """The most reported usage in any `width`-second window of grant times (a provider's
    sliding TPM minute)."""
    gs = sorted(grants)
    worst = total = lo = 0
    for t, _, used in gs:
        total += used
        while gs[lo][0] <= t - width:
            total -= gs[lo][2]
            lo += 1
        worst = max(worst, total)
    return worst


# ---------------------------------------------------------------------- cost per acquire

def _cost_main(redis_url, prefix, limits_list, blocks, block, barrier, out):
    """Per process, interleaved blocks of: a bare INCR, try_acquire on each queue, and the same
    acquire script with the same keys and arguments through redis-py's Script (EVALSHA; the
    arguments prepared outside the timed loop), the fair anchor for our acquire's cost."""
    import redis as redis_lib

    from .redis import RedisLimiter
    client = redis_lib.Redis.from_url(redis_url)
    limiter = RedisLimiter(client, key_prefix=prefix)
    scratch = f"{prefix}:incr:{uuid.uuid4().hex[:8]}"
    subs = [s for s, _ in limits_list[0].sub_queues] or [None]
    client.incr(scratch)
    prepared = {}
    for lim in limits_list:
        limiter.try_acquire(lim, subs[0])
        prepared[lim.id] = []
        for i in range(8):
            plan, req, _sub = limiter._request(lim, subs[i % len(subs)], 100, f"w{i % 8}")
            prepared[lim.id].append(([*plan.keys, req.slots], [*req.dyn, *plan.args, *req.last()]))
    script = limiter._acquire
    barrier.wait()
    samples: dict[str, list[float]] = {"incr": []}
    for lim in limits_list:
        samples[lim.id] = []
        samples["py:" + lim.id] = []
    for b in range(blocks):
        t = time.perf_counter()
        for _ in range(block):
            client.incr(scratch)
        samples["incr"].append((time.perf_counter() - t) / block)
        for lim in limits_list:
            t = time.perf_counter()
            for i in range(block):
                limiter.try_acquire(lim, subs[i % len(subs)], 100, waiter=f"w{i % 8}")
            samples[lim.id].append((time.perf_counter() - t) / block)
            calls = prepared[lim.id]
            t = time.perf_counter()
            for i in range(block):
                keys, args = calls[i % 8]
                script(keys=keys, args=args)
            samples["py:" + lim.id].append((time.perf_counter() - t) / block)
    client.delete(scratch)
    out.put(samples)


def measure_costs(redis_url: str, prefix: str, limits_list: Sequence[QueueLimits], processes: int = 1,
                  blocks: int = 30, block: int = 100, start_method: str = "spawn") -> dict[str, float]:
    """Seconds per call: a bare INCR round trip, try_acquire on each of `limits_list` (key: its
    id) and the same script through redis-py (key: "py:" + its id), measured in interleaved
    blocks by `processes` processes at once; median of the blocks."""
    import statistics
    ctx = mp.get_context(start_method)
    barrier = ctx.Barrier(processes)
    out = ctx.Queue()
    procs = [ctx.Process(target=_cost_main, daemon=True,
                         args=(redis_url, prefix, list(limits_list), blocks, block, barrier, out))
             for _ in range(processes)]
    for p in procs:
        p.start()
    merged: dict[str, list[float]] = {}
    try:
        for _ in procs:
            for k, v in out.get(timeout=300).items():
                merged.setdefault(k, []).extend(v)
    finally:
        for p in procs:
            p.join(timeout=10)
    return {k: statistics.median(v) for k, v in merged.items()}
