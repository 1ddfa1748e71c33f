"""The limits hold at the provider with the default worker layout (issue 15, item 6).

`agentflow worker` with no arguments (every queue, its default pool and concurrency), started
1, 2 and 4 times, no beat, no driver pool of its own; real Redis and Postgres. Every figure is
taken where the calls land, the fake OpenAI server (`fullstack.TaggedServer`), never from
the limiter:

- 48 runs at once on a queue of 4 messages/s, burst 1: the server sees them at 0.97-1.00 of
  4/s (first to last call, to 2 decimals) and no 1 s window holds more than rate + burst = 5 calls; at 1, 2
  and 4 workers;
- 120 short runs on a queue of 300 tokens/min (the server reports 10 tokens a call; each call
  is estimated at about 25): no sliding 60 s window of reported usage holds more than 300,
  and the second minute still gets at least 0.85 of it; at 2 workers;
- two weighted sub-queues (3:1) of one 4 msg/s queue, both saturated: the server sees 3:1
  within 5%; at 2 workers.

The fleet grows between the tests (1, then 2, then 4 workers); each case has its own
workflow, so its own queue state. About 4 minutes, most of it the token case's two minutes.
"""

from __future__ import annotations

import time
import uuid

import pytest

from agentflow.ratelimit.loadtest import achieved_rate, share_error, shares, worst_window
from tests.distributed.conftest import Workers, dist_env  # noqa: F401  (module fixture)
from tests.ratelimit import fullstack as fs
from tests.servers.openai_server import last_user_message

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(900)]

TPM_USAGE = (6, 4)   # what the server reports for a call of the token case: 10 tokens


class Server(fs.TaggedServer):
    """TaggedServer reporting TPM_USAGE for the token case's lane."""

    def _usage_for(self, request: dict, answer: str) -> dict:
        m = self.LANE.search(last_user_message(request))
        if m and m.group(1).startswith("tpm"):
            prompt, completion = TPM_USAGE
            return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
        return super()._usage_for(request, answer)


@pytest.fixture(scope="module")
def server():
    with Server() as srv:
        yield srv


@pytest.fixture(scope="module")
def fleet(dist_env, server, tmp_path_factory):  # noqa: F811
    dist_env.update({"OPENAI_API_KEY": "sk-test-default-layout-0000", "OPENAI_BASE_URL": server.base_url,
                     "AGENTFLOW_VISIBILITY_TIMEOUT": "20"})  # the default a user gets
    w = Workers(dist_env, tmp_path_factory.mktemp("default-layout-logs"))
    yield w
    w.stop_all()


@pytest.fixture(scope="module")
def store(dist_env):  # noqa: F811
    from agentflow.store.db import session_factory
    from agentflow.store.runs import RunStore

    return RunStore(session_factory(dist_env["DATABASE_URL"]))


@pytest.fixture(scope="module")
def submit(dist_env, store):  # noqa: F811
    from agentflow.workers.app import make_celery

    celery = make_celery(dist_env["REDIS_URL"])

    def start(spec: dict, run_input: dict) -> str:
        run_id = store.create(spec, run_input, workflow_id=spec["id"])
        celery.send_task("agentflow.run", args=[run_id], task_id=run_id, queue="runs")
        return run_id
    return start


def grow(fleet: Workers, n: int, store, submit, server) -> None:
    """Exactly n default workers running (the fleet only grows), warmed up: each worker
    process has made calls, so a cold first call does not land in a measurement."""
    names = [f"w{i}" for i in range(1, n + 1)]
    new = [name for name in names if name not in fleet.procs]
    for name in new:
        fleet.start(name, queues=None, concurrency=None, pool=None)
    assert set(fleet.procs) == set(names), f"the fleet only grows: {sorted(fleet.procs)} -> {names}"
    if not new:
        return
    fleet.wait_ready(new, timeout=120)
    warm = fs.warm_up_workflow(f"warm-{uuid.uuid4().hex[:6]}")
    ids = [submit(warm, {"user_input": "warm", "metadata": {"lane": "warm", "n": i}}) for i in range(8 * n)]
    wait_all(store, ids, 120)
    server.forget_arrivals()


def wait_all(store, ids: list[str], timeout: float) -> list[str]:
    deadline = time.time() + timeout
    pending = list(ids)
    while pending and time.time() < deadline:
        pending = [r for r in pending if store.status(r) in ("queued", "running")]
        time.sleep(0.2)
    assert not pending, f"{len(pending)} of {len(ids)} runs did not end in {timeout:.0f} s"
    statuses = [store.status(r) for r in ids]
    failed = [store.get(r)["error"] for r, st in zip(ids, statuses) if st != "succeeded"]
    assert not failed, failed[:3]
    return statuses


def workflow(name: str, queue: dict, max_tokens: int = 80) -> dict:
    spec = fs.workflow(f"{name}-{uuid.uuid4().hex[:6]}", "tpm")
    spec["queues"] = [dict(queue, id="q")]
    spec["nodes"][1]["config"]["max_tokens"] = max_tokens
    return spec


def lane_input(lane: str, n: int, sub_queue: str | None = None) -> dict:
    meta = {"lane": lane, "n": n, **({"sub_queue": sub_queue} if sub_queue else {})}
    return {"user_input": "go", "metadata": meta}


# ---------------------------------------------------------------- 4 messages/s, burst 1

RATE = 4.0


@pytest.mark.parametrize("workers", [1, 2])
def test_48_runs_reach_the_server_at_the_rate_and_never_above_it(workers, fleet, store, submit, server):
    rate_case(workers, fleet, store, submit, server)


def rate_case(workers, fleet, store, submit, server):
    grow(fleet, workers, store, submit, server)
    lane = f"mps{workers}"
    spec = workflow(lane, {"max_messages_per_second": RATE, "burst_size": 1})
    ids = [submit(spec, lane_input(lane, i)) for i in range(48)]
    wait_all(store, ids, 120)
    times = [a.time for a in server.by_lane().get(lane, [])]
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


# ---------------------------------------------------------------- 3:1 sub-queues


def test_weighted_sub_queues_keep_3_to_1_at_the_server(fleet, store, submit, server):
    """Both sub-queues stay saturated (a backlog of runs each) for a 20 s window."""
    grow(fleet, 2, store, submit, server)
    spec = workflow("share", {"max_messages_per_second": RATE, "burst_size": 1,
                              "sub_queues": [{"id": "paid", "weight": 3}, {"id": "free", "weight": 1}]})
    ids = []
    for i in range(150):  # 105 paid, 45 free: ~37 s of calls, so both sides wait throughout the window
        sub = "free" if i % 10 in (3, 6, 9) else "paid"
        ids.append(submit(spec, lane_input(f"share-{sub}", i, sub)))
    deadline = time.time() + 90
    while time.time() < deadline:
        first = server.first_call()
        if first is not None and time.time() > first + 8 + 20:
            break
        time.sleep(0.5)
    # the first seconds go to the 150 drivers starting their runs; then a 20 s window
    start = server.first_call() + 8
    end = start + 20
    by = server.by_lane()
    grants = [(a.time, lane.split("-")[1], a.tokens) for lane in ("share-paid", "share-free")
              for a in by.get(lane, [])]
    err = share_error(grants, fs.WEIGHTS, t_from=start, t_to=end)
    got = shares(grants, t_from=start, t_to=end)
    in_window = sorted(t for t, _, _ in grants if start <= t <= end)
    print(f"\n[2 default workers] paid:free at the server {({k: round(v, 3) for k, v in got.items()})}, "
          f"error {err:.3f}, {len(in_window)} calls in 20 s (x{achieved_rate(in_window) / RATE:.4f} of the rate)")
    for run_id in ids:
        if store.status(run_id) in ("queued", "running"):
            store.cancel(run_id)
    # both sides waited the whole window: neither ran out of runs
    assert len(by.get("share-paid", [])) < 105 and len(by.get("share-free", [])) < 45
    assert err <= 0.05, f"paid:free {got} is {err:.3f} off 3:1"
    assert worst_window(sorted(t for t, _, _ in grants), 1.0) <= RATE + 1


# ---------------------------------------------------------------- 300 tokens/min

TPM = 300


def test_a_token_budget_is_a_sliding_minute_at_the_server(fleet, store, submit, server):
    grow(fleet, 2, store, submit, server)
    spec = workflow("tpm", {"max_tokens_per_minute": TPM}, max_tokens=20)  # estimate ~25, usage 10
    ids = [submit(spec, lane_input("tpm", i)) for i in range(120)]
    deadline = time.time() + 180
    while time.time() < deadline:
        first = server.first_call()
        if first is not None and time.time() > first + 121:
            break
        time.sleep(0.5)
    for run_id in ids:
        if store.status(run_id) in ("queued", "running"):
            store.cancel(run_id)
    calls = server.by_lane().get("tpm", [])
    assert calls, "no call of the token case reached the server"
    t0 = calls[0].time
    worst, worst_at = 0, 0.0
    for a in calls:  # every sliding 60 s window that starts at a call
        used = sum(b.tokens for b in calls if a.time <= b.time < a.time + 60)
        if used > worst:
            worst, worst_at = used, a.time - t0
    minutes = [sum(b.tokens for b in calls if t0 + 60 * m <= b.time < t0 + 60 * (m + 1)) for m in range(2)]
    print(f"\n[2 default workers] {TPM} tokens/min: worst sliding minute {worst} tokens (at +{worst_at:.1f} s), "
          f"minute 1 {minutes[0]}, minute 2 {minutes[1]} (x{minutes[1] / TPM:.3f}), {len(calls)} calls")
    assert worst <= TPM, f"{worst} tokens in the 60 s from +{worst_at:.1f} s"
    assert minutes[1] >= 0.85 * TPM, f"the second minute got {minutes[1]} tokens of {TPM}"


# ---------------------------------------------------------------- last: the fleet grows to 4


def test_48_runs_at_4_default_workers(fleet, store, submit, server):
    rate_case(4, fleet, store, submit, server)
