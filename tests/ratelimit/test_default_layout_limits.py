"""The limits hold at the provider with the default worker layout (issue 15, item 6).

`agentflow worker` with no arguments (every queue, its default pool and concurrency), started
1, 2 and 4 times, no beat, no driver pool of its own; real Redis and Postgres. Every figure is
taken where the calls land, the fake OpenAI server (`fullstack.TaggedServer`), never from
the limiter:

- 120 short runs on a queue of 300 tokens/min (the server reports 10 tokens a call; each call
  is estimated at about 25): no sliding 60 s window of reported usage holds more than 300,
  and the second minute still gets at least 0.85 of it;
- 48 runs at once on a queue of 4 messages/s, burst 1: the server sees them at 0.97-1.00 of
  4/s (first to last call, to 2 decimals) and no 1 s window holds more than rate + burst = 5 calls;
- two weighted sub-queues (3:1) of one 4 msg/s queue, both saturated: the server sees 3:1
  within 5% over 20 s, and no 1 s window above 5 calls;

each at 1, 2 and 4 workers.

The token case needs two minutes of calls but hardly any CPU (30 calls a minute), so its
three worker counts run at the same time, in the background of the others: three fleets,
each with a database, a Redis db (so broker, limiter and locks) and a fake server of its own,
sharing nothing. The rate and share cases start once the token fleets have booted and begun
their runs (the part that loads the cores), on one more fleet that only grows (1, 2, then 4
workers), one case at a time, since a busy neighbour would show in their 1 s windows. Each
case has its own workflow, so its own queue state. About 3 minutes.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from dataclasses import dataclass

import pytest
import redis

from agentflow.ratelimit.loadtest import achieved_rate, share_error, shares, worst_window
from agentflow.workers.launch import stop_process_groups
from tests.distributed.conftest import Workers, dist_env, fresh_env, store_for  # noqa: F401  (module fixture)
from tests.ratelimit import fullstack as fs
from tests.servers.openai_server import last_user_message

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(900)]

TPM_USAGE = (6, 4)   # what the server reports for a call of the token case: 10 tokens
FLEET_SIZES = [1, 2, 4]
MARKER = "agentflow:test:fleet"   # in a fleet's Redis db: gone when another process flushed it


class Server(fs.TaggedServer):
    """TaggedServer reporting TPM_USAGE for the token case's lanes."""

    def _usage_for(self, request: dict, answer: str) -> dict:
        m = self.LANE.search(last_user_message(request))
        if m and m.group(1).startswith("tpm"):
            prompt, completion = TPM_USAGE
            return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
        return super()._usage_for(request, answer)


class Fleet:
    """Default workers (`<name>w1`, `<name>w2`, ...) on one environment, calling one server."""

    def __init__(self, env: dict, server: Server, logdir, name: str = ""):
        from agentflow.workers.app import make_celery

        self.env = dict(env, OPENAI_API_KEY="sk-test-default-layout-0000", OPENAI_BASE_URL=server.base_url,
                        AGENTFLOW_VISIBILITY_TIMEOUT="20")  # the default a user gets
        self.server, self.name = server, name
        self.workers = Workers(self.env, logdir)
        self.store = store_for(self.env)
        self.celery = make_celery(self.env["REDIS_URL"])   # one app for hundreds of runs (conftest.submit_run makes one a run)
        self.marker = uuid.uuid4().hex
        redis.Redis.from_url(self.env["REDIS_URL"]).set(MARKER, self.marker)

    def check_alone(self) -> None:
        """Fail, saying so, when another process used this fleet's Redis db meanwhile (a
        test process of someone sharing this Redis that does not claim its db): it flushes
        the db (limiter state and queued messages gone) and its workers take our messages."""
        url = self.env["REDIS_URL"]
        assert redis.Redis.from_url(url).get(MARKER) == self.marker.encode(), (
            f"{url} was flushed by another process during the case: the figures are not this fleet's")
        foreign = [n for n in self.workers.procs if "does not exist; dropping" in self.workers.log(n)]
        assert not foreign, f"workers {foreign} got run messages of another process on {url}"

    def submit(self, spec: dict, run_input: dict) -> str:
        run_id = self.store.create(spec, run_input, workflow_id=spec["id"])
        self.celery.send_task("agentflow.run", args=[run_id], task_id=run_id, queue="runs")
        return run_id

    def grow(self, n: int) -> None:
        """Exactly n default workers running (the fleet only grows), warmed up: each worker
        process has made calls, so a cold first call does not land in a measurement."""
        names = [f"{self.name}w{i}" for i in range(1, n + 1)]
        new = [name for name in names if name not in self.workers.procs]
        for name in new:
            self.workers.start(name, queues=None, concurrency=None, pool=None)
        assert set(self.workers.procs) == set(names), f"the fleet only grows: {sorted(self.workers.procs)} -> {names}"
        if not new:
            return
        self.workers.wait_ready(new, timeout=120)
        warm = fs.warm_up_workflow(f"warm-{uuid.uuid4().hex[:6]}")
        ids = [self.submit(warm, {"user_input": "warm", "metadata": {"lane": "warm", "n": i}}) for i in range(8 * n)]
        self.wait_all(ids, 120)
        self.server.forget_arrivals()

    def wait_all(self, ids: list[str], timeout: float) -> None:
        deadline = time.time() + timeout
        pending = list(ids)
        while pending and time.time() < deadline:
            st = self.store.statuses(pending)
            pending = [r for r in pending if st.get(r) in ("queued", "running")]
            time.sleep(0.2)
        assert not pending, f"{len(pending)} of {len(ids)} runs did not end in {timeout:.0f} s"
        failed = [self.store.get(r)["error"] for r, st in self.store.statuses(ids).items() if st != "succeeded"]
        assert not failed, failed[:3]

    def wait_for_calls(self, lanes: tuple[str, ...], seconds: float, timeout: float) -> float:
        """Until `seconds` after the first call of these lanes reached the server; returns
        that first call's time. Lanes, not the server's first call: earlier cases' calls
        stay recorded."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            first = self.first_call(lanes)
            if first is not None and time.time() > first + seconds:
                return first
            time.sleep(0.5)
        raise AssertionError(f"no {seconds:.0f} s of calls of {lanes} within {timeout:.0f} s: "
                             f"{ {k: len(v) for k, v in self.server.by_lane().items()} }")

    def first_call(self, lanes: tuple[str, ...]) -> float | None:
        by = self.server.by_lane()
        return min((by[lane][0].time for lane in lanes if by.get(lane)), default=None)

    def cancel_unfinished(self, ids: list[str]) -> None:
        for run_id, st in self.store.statuses(ids).items():
            if st in ("queued", "running"):
                self.store.cancel(run_id)


def workflow(name: str, queue: dict, max_tokens: int = 80) -> dict:
    spec = fs.workflow(f"{name}-{uuid.uuid4().hex[:6]}", "tpm")
    spec["queues"] = [dict(queue, id="q")]
    spec["nodes"][1]["config"]["max_tokens"] = max_tokens
    return spec


def lane_input(lane: str, n: int, sub_queue: str | None = None) -> dict:
    meta = {"lane": lane, "n": n, **({"sub_queue": sub_queue} if sub_queue else {})}
    return {"user_input": "go", "metadata": meta}


# ---------------------------------------------------------------- one fleet that grows: 1, 2, 4 workers


@pytest.fixture(scope="module")
def server():
    with Server() as srv:
        yield srv


@pytest.fixture(scope="module")
def fleet(dist_env, server, token_fleets, tmp_path_factory):  # noqa: F811
    token_fleets.busy_done()
    f = Fleet(dist_env, server, tmp_path_factory.mktemp("default-layout-logs"))
    yield f
    f.workers.stop_all()


# The worker count is a module-scoped parameter: pytest runs every case at 1 worker, then
# every case at 2, then at 4, so the fleet only grows (Fleet.grow fails otherwise).
by_fleet_size = pytest.mark.parametrize("workers", FLEET_SIZES, scope="module")

RATE = 4.0


@by_fleet_size
def test_48_runs_reach_the_server_at_the_rate_and_never_above_it(workers, fleet):
    fleet.grow(workers)
    lane = f"mps{workers}"
    spec = workflow(lane, {"max_messages_per_second": RATE, "burst_size": 1})
    ids = [fleet.submit(spec, lane_input(lane, i)) for i in range(48)]
    fleet.wait_all(ids, 120)
    fleet.check_alone()
    times = [a.time for a in fleet.server.by_lane().get(lane, [])]
    assert len(times) == 48, f"{len(times)} calls for 48 runs: a step was paid twice or not at all"
    ratio = achieved_rate(times) / RATE
    worst = worst_window(times, 1.0)
    print(f"\n[{workers} default workers] 48 runs at 4 msg/s burst 1: x{ratio:.4f} of the rate at the server, "
          f"worst 1 s window {worst} calls, span {max(times) - min(times):.2f} s")
    # the band as the issue states it, to 2 decimals: the grants span at least 47 intervals
    # (the limiter never grants early), so what is left above 1.0000 is the jitter of the
    # few ms between a grant and its call reaching the server (1.0003 = 3.4 ms over 11.75 s)
    assert 0.97 <= round(ratio, 2) <= 1.0, f"{ratio:.4f} x 4/s at the server"
    assert worst <= RATE + 1, f"{worst} calls in one 1 s window (rate + burst = 5)"


@by_fleet_size
def test_weighted_sub_queues_keep_3_to_1_at_the_server(workers, fleet):
    """Both sub-queues stay saturated (a backlog of runs each) for a 20 s window."""
    fleet.grow(workers)
    spec = workflow(f"share{workers}", {"max_messages_per_second": RATE, "burst_size": 1,
                                        "sub_queues": [{"id": "paid", "weight": 3}, {"id": "free", "weight": 1}]})
    lanes = (f"share{workers}-paid", f"share{workers}-free")
    ids = []
    for i in range(150):  # 105 paid, 45 free: ~37 s of calls, so both sides wait throughout the window
        sub = "free" if i % 10 in (3, 6, 9) else "paid"
        ids.append(fleet.submit(spec, lane_input(f"share{workers}-{sub}", i, sub)))
    # the first seconds go to the 150 drivers starting their runs; then a 20 s window
    start = fleet.wait_for_calls(lanes, 8 + 20, timeout=90) + 8
    end = start + 20
    by = fleet.server.by_lane()
    fleet.cancel_unfinished(ids)
    fleet.check_alone()
    grants = [(a.time, lane.split("-")[1], a.tokens) for lane in lanes for a in by.get(lane, [])]
    err = share_error(grants, fs.WEIGHTS, t_from=start, t_to=end)
    got = shares(grants, t_from=start, t_to=end)
    in_window = sorted(t for t, _, _ in grants if start <= t <= end)
    worst = worst_window(sorted(t for t, _, _ in grants), 1.0)
    print(f"\n[{workers} default workers] paid:free at the server {({k: round(v, 3) for k, v in got.items()})}, "
          f"error {err:.3f}, {len(in_window)} calls in 20 s (x{achieved_rate(in_window) / RATE:.4f} of the rate), "
          f"worst 1 s window {worst} calls")
    # both sides waited the whole window: neither ran out of runs
    assert len(by.get(lanes[0], [])) < 105 and len(by.get(lanes[1], [])) < 45
    assert err <= 0.05, f"paid:free {got} is {err:.3f} off 3:1"
    assert worst <= RATE + 1


# ---------------------------------------------------------------- 300 tokens/min, three fleets in the background

TPM = 300


@dataclass
class TokenMinutes:
    worst: int          # most reported usage in a sliding 60 s window starting at a call
    worst_at: float     # where that window starts, s after the first call
    minutes: list[int]  # usage in the first and second minute from the first call
    calls: int


def token_case(fleet: Fleet, workers: int, queued: threading.Event) -> TokenMinutes:
    try:
        fleet.grow(workers)
        lane = f"tpm{workers}"
        spec = workflow(lane, {"max_tokens_per_minute": TPM}, max_tokens=20)  # estimate ~25, usage 10
        ids = [fleet.submit(spec, lane_input(lane, i)) for i in range(120)]
        deadline = time.time() + 90
        while time.time() < deadline and "queued" in fleet.store.statuses(ids).values():
            time.sleep(0.5)   # until every run's driver has begun it (the burst of driver work)
    finally:
        queued.set()
    fleet.wait_for_calls((lane,), 121, timeout=180)
    fleet.cancel_unfinished(ids)
    fleet.check_alone()
    calls = fleet.server.by_lane().get(lane, [])
    t0 = calls[0].time
    worst, worst_at = 0, 0.0
    for a in calls:  # every sliding 60 s window that starts at a call
        used = sum(b.tokens for b in calls if a.time <= b.time < a.time + 60)
        if used > worst:
            worst, worst_at = used, a.time - t0
    minutes = [sum(b.tokens for b in calls if t0 + 60 * m <= b.time < t0 + 60 * (m + 1)) for m in range(2)]
    return TokenMinutes(worst, worst_at, minutes, len(calls))


class TokenFleets:
    """The token case at every fleet size at once, in threads started with the module, while
    the rate and share cases run: its two minutes of calls need hardly any CPU. `busy_done`
    waits until every token fleet has booted and each of its 120 runs has been begun by a
    driver, the part of the token case that loads the cores, so it does not show in the rate
    and share cases' 1 s windows. `result(n)` waits for a size's figures."""

    def __init__(self, tmp_path_factory, stack: contextlib.ExitStack):
        self.results: dict[int, TokenMinutes | BaseException] = {}
        self.queued = {n: threading.Event() for n in FLEET_SIZES}
        fleets = {}
        for n in FLEET_SIZES:
            env = stack.enter_context(fresh_env(tmp_path_factory.mktemp(f"tpm{n}-home")))
            server = stack.enter_context(Server())
            fleets[n] = Fleet(env, server, tmp_path_factory.mktemp(f"tpm{n}-logs"), name=f"tpm{n}")
        # all fleets at once (each worker waits for its tasks to end), before servers and envs go
        stack.callback(lambda: stop_process_groups([p for f in fleets.values() for p in f.workers.procs.values()],
                                                   grace=20))
        self.threads = {n: threading.Thread(target=self._one, args=(fleets[n], n), name=f"tpm{n}")
                        for n in FLEET_SIZES}
        stack.callback(self.join)
        for t in self.threads.values():
            t.start()

    def _one(self, fleet: Fleet, n: int) -> None:
        try:
            self.results[n] = token_case(fleet, n, self.queued[n])
        except BaseException as exc:  # raised by that fleet size's test (token_case has set `queued`)
            self.results[n] = exc

    def busy_done(self, timeout: float = 300) -> None:
        deadline = time.time() + timeout
        for n, ev in self.queued.items():
            assert ev.wait(max(0.0, deadline - time.time())), f"the {n}-worker token fleet never queued its runs"

    def join(self) -> None:
        for t in self.threads.values():
            t.join()

    def result(self, n: int) -> TokenMinutes:
        self.threads[n].join()
        got = self.results[n]
        if isinstance(got, BaseException):
            raise got
        return got


@pytest.fixture(scope="module")
def token_fleets(tmp_path_factory):
    """Started first (the rate and share cases' fleet waits for it); every token fleet is
    stopped and its database and Redis db dropped when the module ends."""
    with contextlib.ExitStack() as stack:
        yield TokenFleets(tmp_path_factory, stack)


@pytest.mark.parametrize("fleet_size", FLEET_SIZES)
def test_a_token_budget_is_a_sliding_minute_at_the_server(fleet_size, token_fleets):
    got = token_fleets.result(fleet_size)
    print(f"\n[{fleet_size} default workers] {TPM} tokens/min: worst sliding minute {got.worst} tokens "
          f"(at +{got.worst_at:.1f} s), minute 1 {got.minutes[0]}, minute 2 {got.minutes[1]} "
          f"(x{got.minutes[1] / TPM:.3f}), {got.calls} calls")
    assert got.worst <= TPM, f"{got.worst} tokens in the 60 s from +{got.worst_at:.1f} s"
    assert got.minutes[1] >= 0.85 * TPM, f"the second minute got {got.minutes[1]} tokens of {TPM}"
