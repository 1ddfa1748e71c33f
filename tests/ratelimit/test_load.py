"""The acceptance runs: 4 workers per queue over a real window, limits checked on what passed.

Distributed mode: 4 OS processes per queue against Redis. Embedded mode: 4 threads per queue
sharing one MemoryLimiter. The three queues run at the same time (12 workers), for
`AF_RL_WINDOW` seconds (default 20). Figures are taken on the limiter's own clock (Redis
TIME), after `WARMUP` seconds so the initial burst is not counted as the rate.
"""

from __future__ import annotations

import math
import os
import socket
import subprocess
import time
import uuid

import pytest

from agentflow.ratelimit import MemoryLimiter, QueueLimits
from agentflow.ratelimit.base import BUCKET, summarize
from agentflow.ratelimit.loadtest import (Scenario, achieved_rate, run_redis, run_threads,
                                          share_error, steady, worst_usage_window, worst_window)

from tests.needs import REDIS_URL, need_redis, need_redis_server

WINDOW = float(os.environ.get("AF_RL_WINDOW", "20"))
WARMUP = 2.0
TOLERANCE = 0.05
WEIGHTS = {"paid": 3.0, "free": 1.0}


def scenarios(tag: str) -> dict[str, Scenario]:
    return {
        # messages/s with a burst, shared 3:1 between two saturated sub-queues
        "rate": Scenario(QueueLimits(f"rate-{tag}", max_messages_per_second=20, burst_size=5,
                                     sub_queues=tuple(WEIGHTS.items())),
                         workers=4, subs=("paid", "free")),
        # requests/minute (900 = 15/s) combined with a looser messages/s
        "rpm": Scenario(QueueLimits(f"rpm-{tag}", max_messages_per_second=30,
                                    max_requests_per_minute=900, burst_size=3), workers=4),
        # tokens/minute: reserve 200, report 50..200 used
        "tokens": Scenario(QueueLimits(f"tok-{tag}", max_tokens_per_minute=120_000), workers=4,
                           tokens=200, usage=(50, 200), call_seconds=0.002),
    }


@pytest.fixture(scope="module", params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def load(request):
    """{name: (scenario, result, stats right after the run)} for one backend."""
    tag = uuid.uuid4().hex[:8]
    scs = scenarios(tag)
    if request.param == "memory":
        limiter = MemoryLimiter()
        results = run_threads(limiter, list(scs.values()), WINDOW)
    else:
        need_redis(REDIS_URL)
        from agentflow.ratelimit.redis import RedisLimiter

        prefix = f"af:rl:test:{tag}"
        results = run_redis(REDIS_URL, prefix, list(scs.values()), WINDOW)
        limiter = RedisLimiter(REDIS_URL, key_prefix=prefix)
    out = {name: (sc, res, limiter.stats(sc.limits)) for (name, sc), res in zip(scs.items(), results)}
    _, r, _ = out["rate"]
    print(f"\n[{request.param}, {WINDOW:g} s] msg/s ratio {_rate(r) / 20:.4f}, worst 1 s "
          f"{worst_window(r.times, 1.0)} (limit 25), share error "
          f"{share_error(r.grants, WEIGHTS, t_from=r.times[0] + WARMUP):.4f}, calls/grant "
          f"{r.calls / len(r.grants):.2f}")
    _, r, _ = out["rpm"]
    print(f"[{request.param}] rpm ratio {_rate(r) / 15:.4f}, worst 1 s {worst_window(r.times, 1.0)} "
          f"(limit 18), calls/grant {r.calls / len(r.grants):.2f}")
    _, r, _ = out["tokens"]
    print(f"[{request.param}] tokens in the fullest 60 s {worst_usage_window(r.grants) / 120_000:.4f} of the limit, "
          f"calls/grant {r.calls / len(r.grants):.2f}")
    if request.param == "redis":
        limiter.clear()
    return out


def _rate(res):
    return achieved_rate(steady(res.times, WARMUP))


def test_messages_per_second_hold(load):
    sc, res, _ = load["rate"]
    assert _rate(res) / 20 == pytest.approx(1.0, abs=TOLERANCE)
    assert worst_window(res.times, 1.0) <= 20 + 5, "a 1 s window went above rate + burst_size"


def test_requests_per_minute_hold_with_messages_per_second(load):
    sc, res, _ = load["rpm"]
    assert _rate(res) / (900 / 60) == pytest.approx(1.0, abs=TOLERANCE)
    assert worst_window(res.times, 1.0) <= 15 + 3
    assert worst_window(res.times, 60.0) <= 900 + 3


def test_tokens_per_minute_hold_on_reported_usage(load):
    """A sliding minute, as a provider counts TPM: the reported usage in any 60 s never passes
    the limit, and saturated waiters get the minute's budget (estimates give back what the
    reported usage did not use), not a fraction of it."""
    sc, res, _ = load["tokens"]
    fullest = worst_usage_window(res.grants, 60.0)
    assert fullest <= 120_000, f"{fullest} tokens reported in one 60 s window"
    assert fullest >= (1 - TOLERANCE) * 120_000, f"saturated waiters got only {fullest} tokens of 120,000 a minute"


def test_saturated_sub_queues_share_by_weight(load):
    sc, res, _ = load["rate"]
    t0 = res.times[0] + WARMUP
    assert share_error(res.grants, WEIGHTS, t_from=t0) <= TOLERANCE


def test_waiters_retry_on_countdowns_not_in_a_herd(load):
    for name in ("rate", "rpm", "tokens"):
        _, res, _ = load[name]
        assert res.calls / len(res.grants) < 4, (name, res.calls, len(res.grants), res.denials)


def _buckets(times_and_counts):
    out: dict[int, int] = {}
    for t, n in times_and_counts:
        b = math.floor(t / BUCKET)
        out[b] = out.get(b, 0) + n
    return out


def test_live_figures(load):
    """stats() right after the run agrees with the grants the workers saw."""
    _, res, st = load["rate"]
    rate, per_min, _ = summarize(_buckets((t, 1) for t in res.times), {}, st.at)
    assert st.rate_per_second == pytest.approx(rate, rel=1e-6) and rate > 10
    assert st.requests_per_minute == pytest.approx(per_min, rel=1e-6)
    assert sum(st.granted.values()) == len(res.grants)
    assert st.granted["paid"] / len(res.grants) == pytest.approx(0.75, abs=0.03)
    # the workers just stopped: their last pending tasks (one per sub-queue) still show
    assert st.waiting["default"] == 0 and 1 <= sum(st.waiting.values()) <= 8
    _, res, st = load["tokens"]
    _, _, tok = summarize({}, _buckets((t, used) for t, _, used in res.grants), st.at)
    # usage is counted when settled, a few ms after the grant: bucket edges may differ
    assert st.tokens_per_minute == pytest.approx(tok, rel=0.02) and tok > 0
    assert 0 <= st.tokens_available <= 120_000


# ---------------------------------------------------------------------- Redis restarts

RESTART_RUN = 8.0


def _restart_scenario(tag):
    return Scenario(QueueLimits(f"restart-{tag}", max_messages_per_second=20, burst_size=5),
                    workers=4)


@pytest.mark.redis
def test_losing_the_limiter_keys_adds_no_burst(redis_url):
    """The keys vanish mid-stream (what a restart without persistence does)."""
    from agentflow.ratelimit.redis import RedisLimiter
    tag = uuid.uuid4().hex[:8]
    prefix = f"af:rl:test:{tag}"
    wiper = RedisLimiter(redis_url, key_prefix=prefix)
    wiped = []
    [res] = run_redis(redis_url, prefix, [_restart_scenario(tag)], RESTART_RUN,
                      events=[(RESTART_RUN / 2, lambda: wiped.append((time.time(), wiper.clear())))])
    wiper.clear()
    assert wiped and wiped[0][1] > 0
    assert worst_window(res.times, 1.0) <= 20 + 5
    after = [t for t in res.times if t > wiped[0][0] + 0.5]
    assert achieved_rate(after) == pytest.approx(20, rel=0.05)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Server:
    """A private redis-server without persistence, to stop and start again."""

    def __init__(self, tmp_path):
        self.port, self.dir, self.proc = _free_port(), tmp_path, None

    def start(self):
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.dir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import redis
        r = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        for _ in range(100):
            try:
                r.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


@pytest.mark.redis
@pytest.mark.chaos
def test_a_real_redis_restart_adds_no_burst(tmp_path):
    need_redis_server()
    server = _Server(tmp_path)
    server.start()
    url = f"redis://127.0.0.1:{server.port}/0"
    tag = uuid.uuid4().hex[:8]
    down = []

    def restart():
        server.stop()
        down.append(time.time())        # from here until the new server starts: no Redis
        time.sleep(0.3)
        down.append(time.time())
        server.start()

    try:
        [res] = run_redis(url, "af:rl", [_restart_scenario(tag)], RESTART_RUN,
                          events=[(RESTART_RUN / 2, restart)])
    finally:
        server.stop()
    assert res.unavailable > 0, "the workers never saw Redis down"
    assert not [t for t in res.times if down[0] < t < down[1]], "granted while Redis was down"
    assert worst_window(res.times, 1.0) <= 20 + 5
    after = [t for t in res.times if t > down[1] + 0.5]
    assert achieved_rate(after) == pytest.approx(20, rel=0.05)
