"""Full-stack rate-limit runs: real workflows, real node calls, figures taken where the calls land.

Shared by `test_celery_limits.py` (Celery workers + Redis limiter) and
`test_embedded_limits.py` (embedded executor + in-memory limiter). Three workflows
`input -> writer (llm, queue q)` run at the same time, one queue configuration each:

    mps   max_messages_per_second 4, burst_size 2, sub-queues paid:free = 3:1
    rpm   max_requests_per_minute 240 (4/s), burst_size 2, sub-queues paid:free = 3:1
    tpm   max_tokens_per_minute 6000; the server reports 100 tokens a call -> 1 call/s

Every lane (workflow + sub-queue) is kept saturated by a `Feeder`: it keeps a fixed number
of unfinished runs per lane; a call reaching the server stands for a run about to end, so
it submits the next run of that lane then (no polling).

The `TaggedServer` (an OpenAIServer) records every chat call: its arrival time, the lane
named in its prompt, and the usage it reported. Figures use `agentflow.ratelimit.loadtest`
over one common steady window of `WINDOW` s (env AF_RL_WINDOW, default 20) that starts
WARMUP s after the first call:

- rate of mps and rpm (all their calls): within 5% of the limit;
- no 1 s window, over the whole run, holds more than rate + burst_size calls;
- tokens/min of tpm (the server's reported usage) is a sliding minute: the whole run lies
  within the first minute of tpm calls, which gets 0.85-1.0 of the budget (plus what the
  calls in flight used beyond their estimates: 4 x ~15 tokens);
- shares of paid:free: within 5% (relative, `loadtest.share_error`) of 3:1, on the calls
  of both 3:1 queues in the window (160 at 4/s each; each queue's own figure is reported).

The token budget is a sliding 60 s window, as a provider's TPM: its minute's budget (60
calls here) goes as fast as the runs come, then nothing until the first charges leave the
window (tests/ratelimit/test_default_layout_limits.py measures two minutes of it).
"""

from __future__ import annotations

import logging
import os
import queue as queue_mod
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable

from agentflow.graph.spec import Queue
from agentflow.graph.step import QueueCharge
from agentflow.ratelimit import QueueLimits
from agentflow.ratelimit.loadtest import achieved_rate, share_error, shares, worst_window
from tests.servers import RecordedCall, Reply
from tests.servers.openai_server import OpenAIServer, last_user_message

log = logging.getLogger(__name__)

WINDOW = float(os.environ.get("AF_RL_WINDOW", "20"))
WARMUP = 3.0          # s after the first call before the window opens (start-up of every lane)
TOLERANCE = 0.05
USAGE = (60, 40)      # prompt, completion tokens the server reports for every call
MAX_FEED = WINDOW + 40.0   # s: the feeder gives up after this (the test then fails)
WEIGHTS = {"paid": 3.0, "free": 1.0}
_SUBS = [{"id": s, "weight": w} for s, w in WEIGHTS.items()]

QUEUES: dict[str, dict] = {
    "mps": {"id": "q", "max_messages_per_second": 4, "burst_size": 2, "sub_queues": _SUBS},
    "rpm": {"id": "q", "max_requests_per_minute": 240, "burst_size": 2, "sub_queues": _SUBS},
    "tpm": {"id": "q", "max_tokens_per_minute": 6000},
}


def binding_rate(q: dict) -> float | None:
    """Calls per second the message limits allow (None: tokens only)."""
    rates = [v for v in (q.get("max_messages_per_second"),
                         q["max_requests_per_minute"] / 60 if q.get("max_requests_per_minute") else None) if v]
    return min(rates) if rates else None


@dataclass(frozen=True)
class Lane:
    name: str               # the tag in the prompt: "<kind>" or "<kind>-<sub_queue>"
    kind: str               # key of QUEUES
    workflow_id: str
    sub_queue: str | None
    inflight: int           # unfinished runs kept submitted


def make_lanes(suffix: str, inflight: dict[str, int]) -> list[Lane]:
    """inflight: {"paid": n, "free": n, "tpm": n} (paid/free for each 3:1 queue)."""
    lanes = []
    for kind, q in QUEUES.items():
        wid = f"rl-{kind}-{suffix}"
        if q.get("sub_queues"):
            lanes += [Lane(f"{kind}-{s['id']}", kind, wid, s["id"], inflight[s["id"]]) for s in q["sub_queues"]]
        else:
            lanes.append(Lane(kind, kind, wid, None, inflight[kind]))
    return lanes


def workflow(workflow_id: str, kind: str) -> dict:
    return {
        "id": workflow_id, "name": f"rate limits: {kind}", "start_node": "input",
        "nodes": [
            {"id": "input", "type": "input"},
            # max_tokens 80 + ~10 prompt tokens: the reserved estimate is close to the real 100
            {"id": "writer", "type": "llm", "source": "gpt", "queue": "q",
             "config": {"prompt": "lane={metadata.lane} n={metadata.n} {user_input}",
                        "output_key": "text_result", "max_tokens": 80}},
        ],
        "edges": [{"from": "input", "to": "writer"}],
        "queues": [QUEUES[kind]],
        "sources": [{"id": "gpt", "kind": "llm", "provider": "openai", "model": "gpt-4o-mini",
                     "api_key_env": "OPENAI_API_KEY", "base_url_env": "OPENAI_BASE_URL"}],
    }


WARM_RUNS = 16   # runs of an unlimited workflow before the measurement (see warm_up)


def warm_up_workflow(workflow_id: str) -> dict:
    spec = workflow(workflow_id, "tpm")
    spec["queues"] = []
    spec["nodes"][1].pop("queue")
    return spec


def run_input(lane: Lane, n: int) -> dict:
    meta = {"lane": lane.name, "n": n}
    if lane.sub_queue:
        meta["sub_queue"] = lane.sub_queue
    return {"user_input": "go", "metadata": meta}


def limits_of(workflow_id: str, kind: str) -> QueueLimits:
    """What the runs are charged to (graph/step.py queue_plan: namespaced by workflow id)."""
    return QueueLimits.of(QueueCharge.of(Queue.model_validate(QUEUES[kind]), namespace=workflow_id))


def drain_tokens(limiter, lanes: list[Lane]) -> None:
    """Spend the full token bucket of the token-limited queues (see the module docstring)."""
    for lane in lanes:
        q = QUEUES[lane.kind]
        if q.get("max_tokens_per_minute"):
            limits = limits_of(lane.workflow_id, lane.kind)
            d = limiter.try_acquire(limits, None, tokens=q["max_tokens_per_minute"])
            assert d.allowed, d
            limiter.settle(limits, d, q["max_tokens_per_minute"])


# ---------------------------------------------------------------- the server


@dataclass
class Arrival:
    time: float     # when the request reached the server (time.time())
    lane: str
    tokens: int     # usage.total_tokens the server reported
    n: int = 0      # the feeder's submission number of the run (metadata.n)


class TaggedServer(OpenAIServer):
    """Records (arrival, lane, reported usage) of every chat call; tells `on_call` the lane."""

    LANE = re.compile(r"lane=([\w-]+) n=(\d+)")

    def __init__(self, **kw):
        super().__init__(**kw)
        self.set_usage(*USAGE)
        self.arrivals: list[Arrival] = []
        self.on_call: Callable[[str], None] | None = None
        self._alock = threading.Lock()

    def handle(self, call: RecordedCall) -> Reply:
        reply = super().handle(call)
        if call.path == "/v1/chat/completions" and reply.status == 200 and isinstance(reply.body, dict):
            m = self.LANE.search(last_user_message(call.json or {}))
            lane, n = (m.group(1), int(m.group(2))) if m else ("?", 0)
            with self._alock:
                self.arrivals.append(Arrival(call.time, lane, int(reply.body["usage"]["total_tokens"]), n))
            if self.on_call is not None:
                self.on_call(lane)
        return reply

    def forget_arrivals(self) -> None:
        with self._alock:
            self.arrivals.clear()

    def first_call(self) -> float | None:
        with self._alock:
            return min((a.time for a in self.arrivals), default=None)

    def by_lane(self) -> dict[str, list[Arrival]]:
        with self._alock:
            items = sorted(self.arrivals, key=lambda a: a.time)
        out: dict[str, list[Arrival]] = {}
        for a in items:
            out.setdefault(a.lane, []).append(a)
        return out


# ---------------------------------------------------------------- keeping the queues saturated


class Feeder:
    """Keeps `lane.inflight` unfinished runs per lane until `done()` says the window is over.

    `submit(lane, n)` creates and starts one run (mode specific). A call arriving at the
    server means one run of that lane is about to end: the next one is submitted then."""

    def __init__(self, lanes: list[Lane], submit: Callable[[Lane, int], None], server: TaggedServer,
                 done: Callable[[], bool]):
        self.lanes = {lane.name: lane for lane in lanes}
        self.submit = submit
        self.done = done
        self.todo: queue_mod.Queue[str] = queue_mod.Queue()
        self.stopped = threading.Event()
        self.submitted = 0
        self.submit_times: dict[int, float] = {}   # submission number -> time
        self.errors: list[BaseException] = []
        self.started_at = 0.0
        server.on_call = self._on_call
        self.thread = threading.Thread(target=self._loop, name="rl-feeder", daemon=True)

    def _on_call(self, lane: str) -> None:
        if not self.stopped.is_set() and lane in self.lanes:
            self.todo.put(lane)

    def start(self) -> "Feeder":
        for lane in self.lanes.values():
            for _ in range(lane.inflight):
                self.todo.put(lane.name)
        self.started_at = time.time()
        self.thread.start()
        return self

    def _loop(self) -> None:
        try:
            while not self.stopped.is_set():
                if self.done() or time.time() - self.started_at > MAX_FEED:
                    break
                try:
                    name = self.todo.get(timeout=0.1)
                except queue_mod.Empty:
                    continue
                self.submitted += 1
                self.submit_times[self.submitted] = time.time()
                self.submit(self.lanes[name], self.submitted)
        except BaseException as exc:  # reported by wait()
            log.exception("feeder failed")
            self.errors.append(exc)
        finally:
            self.stopped.set()

    def wait(self, timeout: float) -> None:
        self.thread.join(timeout)
        self.stopped.set()
        if self.errors:
            raise RuntimeError(f"submitting runs failed: {self.errors[0]!r}") from self.errors[0]


# ---------------------------------------------------------------- figures


def window_start(server: TaggedServer) -> float | None:
    first = server.first_call()
    return None if first is None else first + WARMUP


def window_over(server: TaggedServer, margin: float = 0.5) -> Callable[[], bool]:
    def done() -> bool:
        start = window_start(server)
        return start is not None and time.time() > start + WINDOW + margin
    return done


@dataclass
class Figures:
    window: tuple[float, float]
    rate: dict[str, float] = field(default_factory=dict)          # kind -> calls/s in the window
    rate_ratio: dict[str, float] = field(default_factory=dict)    # kind -> rate / limit
    worst_1s: dict[str, int] = field(default_factory=dict)        # kind -> most calls in a 1 s window (whole run)
    allowed_1s: dict[str, float] = field(default_factory=dict)    # kind -> rate + burst_size
    worst_at: dict[str, float] = field(default_factory=dict)      # kind -> s after its first call
    tokens_per_minute: float = 0.0
    tokens_ratio: float = 0.0
    shares: dict[str, float] = field(default_factory=dict)        # both 3:1 queues together
    share_error: float = 0.0
    queue_share_error: dict[str, float] = field(default_factory=dict)   # kind -> its own error
    calls: dict[str, int] = field(default_factory=dict)           # lane -> calls in the window

    def summary(self) -> str:
        parts = [f"{k}: {self.rate[k]:.3f}/s (x{self.rate_ratio[k]:.3f}), worst 1 s {self.worst_1s.get(k)}"
                 f"/{self.allowed_1s.get(k, '-'):g} at +{self.worst_at.get(k, 0):.1f} s" for k in self.rate]
        parts.append(f"tpm: {self.tokens_per_minute:.0f} tokens/min (x{self.tokens_ratio:.3f})")
        parts.append(f"paid:free {({k: round(v, 4) for k, v in self.shares.items()})} error {self.share_error:.3f} "
                     f"(per queue {({k: round(v, 3) for k, v in self.queue_share_error.items()})})")
        parts.append(f"calls in window {self.calls}")
        return "; ".join(parts)


def _worst_at(ts: list[float], width: float) -> float:
    """Start of the first 1 s window holding the most calls (loadtest.worst_window's)."""
    best, at, j = 0, ts[0] if ts else 0.0, 0
    for i in range(len(ts)):
        while j < len(ts) and ts[j] < ts[i] + width:
            j += 1
        if j - i > best:
            best, at = j - i, ts[i]
    return at


def _under(err: float) -> bool:
    return err <= TOLERANCE + 1e-9


def figures(server: TaggedServer, lanes: list[Lane], start: float, end: float) -> Figures:
    by = server.by_lane()
    fig = Figures((start, end))
    kinds: dict[str, list[tuple[Arrival, str | None]]] = {}
    for lane in lanes:
        kinds.setdefault(lane.kind, []).extend((a, lane.sub_queue) for a in by.get(lane.name, []))
        fig.calls[lane.name] = sum(1 for a in by.get(lane.name, []) if start <= a.time <= end)
    pooled = []
    for kind, items in kinds.items():
        items.sort(key=lambda x: x[0].time)
        q = QUEUES[kind]
        inside = [a for a, _ in items if start <= a.time <= end]
        if q.get("max_tokens_per_minute"):
            # a sliding minute: the reported usage of the calls in the minute from the first
            everything = [a for a, _ in items]
            if everything:
                fig.tokens_per_minute = float(sum(a.tokens for a in everything
                                                  if a.time < everything[0].time + 60))
            fig.tokens_ratio = fig.tokens_per_minute / q["max_tokens_per_minute"]
        limit = binding_rate(q)
        if limit:
            fig.rate[kind] = achieved_rate([a.time for a in inside])
            fig.rate_ratio[kind] = fig.rate[kind] / limit
            times = [a.time for a, _ in items]
            fig.worst_1s[kind] = worst_window(times, 1.0)
            fig.worst_at[kind] = _worst_at(times, 1.0) - times[0] if times else 0.0
            fig.allowed_1s[kind] = limit + (q.get("burst_size") or 1)
        if q.get("sub_queues"):
            grants = [(a.time, sub or "", a.tokens) for a, sub in items]
            fig.queue_share_error[kind] = share_error(grants, WEIGHTS, t_from=start, t_to=end)
            pooled += grants
    fig.shares = shares(pooled, t_from=start, t_to=end)
    fig.share_error = share_error(pooled, WEIGHTS, t_from=start, t_to=end)
    return fig


def check(fig: Figures) -> list[str]:
    """The acceptance checks; returns what failed (empty: all held)."""
    bad = []
    for kind, ratio in fig.rate_ratio.items():
        if not _under(abs(ratio - 1.0)):
            bad.append(f"{kind}: rate {fig.rate[kind]:.3f}/s is {ratio:.3f} x the limit (allowed +-{TOLERANCE:.0%})")
    for kind, worst in fig.worst_1s.items():
        if worst > fig.allowed_1s[kind]:
            bad.append(f"{kind}: {worst} calls in one 1 s window, more than rate + burst = {fig.allowed_1s[kind]:g}")
    if not 0.85 <= fig.tokens_ratio <= 1.0 + 4 * 20 / 6000:
        bad.append(f"tpm: {fig.tokens_per_minute:.0f} tokens in its first minute is {fig.tokens_ratio:.3f} x the budget")
    if not _under(fig.share_error):
        bad.append(f"paid:free {fig.shares} is {fig.share_error:.3f} off 3:1 (relative)")
    return bad


def unique_suffix() -> str:
    return uuid.uuid4().hex[:6]


@dataclass
class Measured:
    figures: Figures
    lanes: list[Lane]
    samples: list[tuple[float, dict]]   # (time, {queue id: GET /queues item}) inside the window
    metrics_text: str                   # GET /metrics after the run
    run_ids: list[str]
    fed_seconds: float

    def workflow_of(self, kind: str) -> str:
        return next(lane.workflow_id for lane in self.lanes if lane.kind == kind)


def measure(mode: str, api, server: TaggedServer, store, limiter,
            start_run: Callable[[dict, dict, str], str], inflight: dict[str, int]) -> Measured:
    """Save the workflows through `api`, warm up, then keep every lane saturated until one
    full steady window was seen, sampling GET /queues every 2 s meanwhile.

    `start_run(spec, run_input, workflow_id) -> run_id` creates and starts one run (mode
    specific); `limiter` is the one the runs are charged to; `store` a RunStore."""
    suffix = unique_suffix()
    lanes = make_lanes(suffix, inflight)
    specs: dict[str, dict] = {}
    for lane in lanes:
        if lane.workflow_id not in specs:
            specs[lane.workflow_id] = workflow(lane.workflow_id, lane.kind)
            r = api.post("/workflows", json=specs[lane.workflow_id])
            assert r.status_code == 201, r.text

    # every executor makes its first (slow: cold HTTP client, connections) calls before the
    # measurement: a cold first call arrives late and packs the queue's first second
    warm = warm_up_workflow(f"rl-warm-{suffix}")
    warm_ids = [start_run(warm, {"user_input": "warm", "metadata": {"lane": "warm", "n": i}}, warm["id"])
                for i in range(WARM_RUNS)]
    deadline = time.time() + 120  # cold worker processes on a loaded CI machine
    while any(store.status(r) in ("queued", "running") for r in warm_ids) and time.time() < deadline:
        time.sleep(0.1)
    assert all(store.status(r) == "succeeded" for r in warm_ids), [store.get(r)["error"] for r in warm_ids][:2]
    server.forget_arrivals()

    run_ids: list[str] = []
    by_n: dict[int, str] = {}

    def submit(lane: Lane, n: int) -> None:
        run_id = start_run(specs[lane.workflow_id], run_input(lane, n), lane.workflow_id)
        run_ids.append(run_id)
        by_n[n] = run_id

    started = time.time()
    feeder = Feeder(lanes, submit, server, window_over(server)).start()
    samples: list[tuple[float, dict]] = []
    while feeder.thread.is_alive():
        time.sleep(2.0)
        r = api.get("/queues", params={"limit": 200})
        assert r.status_code == 200, r.text
        samples.append((time.time(), {q["id"]: q for q in r.json()["items"]}))
    feeder.wait(5)
    fed = time.time() - started
    metrics_text = api.get("/metrics").text
    start = window_start(server)
    assert start is not None and time.time() > start + WINDOW, (
        f"no full steady window within {MAX_FEED:.0f} s: calls per lane "
        f"{ {k: len(v) for k, v in server.by_lane().items()} }")
    fig = figures(server, lanes, start, start + WINDOW)
    if os.environ.get("AF_RL_DEBUG"):
        debug_latencies(server, feeder, store, by_n)
    print(f"\n[{mode}] window {WINDOW:g} s, {len(run_ids)} runs, fed for {fed:.1f} s: {fig.summary()}")
    # the runs still going end quickly when cancelled: they stop at their next step
    for run_id in run_ids:
        if store.status(run_id) in ("queued", "running"):
            store.cancel(run_id)
    inside = [(t, s) for t, s in samples if start + 2 <= t <= start + WINDOW]
    return Measured(fig, lanes, inside, metrics_text, run_ids, fed)


def check_queues_api(m: Measured) -> None:
    """GET /queues during the window: every lane's sub-queue had tasks waiting (saturated)
    and the live figures are near the limits; /metrics has the queue gauges."""
    assert m.samples, "no GET /queues sample inside the window"
    for lane in m.lanes:
        waiting = [s[f"{lane.workflow_id}:q"]["waiting"][lane.sub_queue or "default"] for _, s in m.samples]
        # the token lane's sliding minute lets its runs through until the budget is spent
        assert (max(waiting) if lane.kind == "tpm" else min(waiting)) >= 1, (lane.name, waiting)
    _, last = m.samples[-1]
    for kind in ("mps", "rpm"):
        live = last[f"{m.workflow_of(kind)}:q"]
        limit = binding_rate(QUEUES[kind])
        # the live figure spans ~15 s of 5 s buckets: close to, not exactly, the limit
        assert abs(live["rate_per_second"] / limit - 1) < 0.15, (kind, live, limit)
        assert live["granted"]["paid"] > 2 * live["granted"]["free"] > 0, live
    tpm = last[f"{m.workflow_of('tpm')}:q"]
    assert tpm["tokens_per_minute"] > 0 and tpm["limits"]["max_tokens_per_minute"] == 6000
    wid = m.workflow_of("tpm")
    assert f'agentflow_queue_waiting{{queue="{wid}:q",sub_queue="default"}}' in m.metrics_text
    assert f'agentflow_queue_limit_tokens_per_minute{{queue="{wid}:q"}} 6000.0' in m.metrics_text


def check_runs(m: Measured, server: TaggedServer, store, timeout: float = 30) -> None:
    """Every run ended, none failed, and each succeeded run called the server once."""
    deadline = time.time() + timeout
    pending = list(m.run_ids)
    while pending and time.time() < deadline:
        pending = [r for r in pending if store.status(r) in ("queued", "running")]
        time.sleep(0.2)
    assert not pending, f"{len(pending)} runs did not end"
    statuses = [store.status(r) for r in m.run_ids]
    failed = [store.get(r)["error"] for r, st in zip(m.run_ids, statuses) if st == "failed"]
    assert not failed, failed[:3]
    succeeded = statuses.count("succeeded")
    names = {lane.name for lane in m.lanes}
    calls = sum(len(v) for k, v in server.by_lane().items() if k in names)
    # a cancelled run may have made its call before it was cancelled
    assert succeeded <= calls <= succeeded + statuses.count("cancelled"), (succeeded, calls)


def debug_latencies(server: TaggedServer, feeder: Feeder, store, by_n: dict[int, str]) -> None:
    """Where a run's time goes (AF_RL_DEBUG=1): submit -> run start -> call at the server."""
    from datetime import datetime

    def pct(xs):
        xs = sorted(xs)
        return "-" if not xs else " ".join(f"p{q}={xs[min(len(xs) - 1, int(len(xs) * q / 100))]:.3f}"
                                           for q in (10, 50, 90, 99))
    for lane, arrivals in server.by_lane().items():
        pick, call = [], []
        for a in arrivals[:300]:
            rec = store.get(by_n[a.n], with_steps=False) if a.n in by_n else None
            sub = feeder.submit_times.get(a.n)
            if sub and rec and rec.get("started_at"):
                started = datetime.fromisoformat(rec["started_at"]).timestamp()
                pick.append(started - sub)
                call.append(a.time - started)
        print(f"[debug] {lane}: submit->start {pct(pick)} | start->call {pct(call)}")
    for kind in ("mps", "rpm"):
        ts = sorted(a.time for k, v in server.by_lane().items() if k.startswith(kind) for a in v)
        print(f"[debug] {kind} first calls: {[round(t - ts[0], 3) for t in ts[:12]]}")
