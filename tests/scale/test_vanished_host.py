"""A worker host vanishes mid-run: cut off by its network link, not stopped.

Started here: two "hosts" (network namespaces, each with its own hostname, on a private
bridge: tests/scale/netns.py), a redis-server of the test's own and the stand-in OpenAI
server listening on the bridge's gateway address, the machine's Postgres brought to that
address by a TCP forwarder, `agentflow serve` in the root namespace, and one `agentflow
worker` with its default arguments in each host. Runs of `input -> writer -> reviewer` (two
LLM steps, each call answered after STEP_SECONDS) go through the API.

Once hostA has two calls in flight at the server (both its slots busy) and every earlier
result of its is recorded, hostA's bridge port goes down: its packets vanish and its TCP
connections hang, as when a machine's network dies. From just before the cut, the
server answers hostA's calls only after the link is back (a slow provider), so the late
results really arrive. Then:

- every run succeeds;
- both steps hostA had in flight are called again by hostB within 30 s of the cut (the
  default visibility timeout, 20 s, plus one restore interval, 5 s, and a free slot);
- "paid twice", counted at the server (docs/scaling.md says why a call in flight at the cut
  is paid again): a step of hostA's in flight at the cut is called exactly twice (hostA's
  call, whose answer the partition kept from hostA until after hostB had taken over, and
  hostB's); every other step exactly once; no call of a step reaches the server after its
  result was recorded;
- when the link comes back hostA receives its late answers, one success and one failure (a
  500, which it would retry): both results are discarded and the failure is not retried (the
  retry fence: its attempt was closed as lost); its attempts stay `lost`, each step has
  exactly one `succeeded` row (hostB's) and the run trace shows each step's result once;
- hostA is back in the fleet: its worker answers a ping, and runs submitted after that all
  succeed (how many of their steps hostA takes is printed, not asserted: its broker
  connection may still be waiting out TCP's retransmission backoff).
"""

from __future__ import annotations

import re
import sys
import threading
import time

import httpx
import pytest

from tests.scale.harness import (Api, FreshDatabase, Proc, base_env, binary, free_port, token, wait_until,
                                 writer_reviewer_spec)
from tests.scale.netns import Forwarder, Hosts
from tests.servers.openai_server import OpenAIServer, last_user_message

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(300)]

STEP_SECONDS = 2.0   # each model call is answered this long after it arrives
RUNS = 10
TAKEOVER_LIMIT = 30.0
TAG = re.compile(r"^run=(\d+) step=(\w+)")


def spec() -> dict:
    return writer_reviewer_spec("vanish", "Vanished host")


class SlowProvider(OpenAIServer):
    """Answers each call STEP_SECONDS after it arrives; while `hold` is set, answers to
    `held_client` wait until `release` is set (so they reach that host after a partition),
    and the calls in `fail_late` are then answered with a 500 (which a worker retries)."""

    def __init__(self, host: str, held_client: str):
        super().__init__(host)
        self.held_client = held_client
        self.hold, self.release = threading.Event(), threading.Event()
        self.fail_late: set[int] = set()

    def handle(self, call):
        time.sleep(STEP_SECONDS)
        if call.client == self.held_client and self.hold.is_set():
            self.release.wait(240)
            if call.index in self.fail_late:
                return self.error_reply(500, "the provider failed (late)")
        return super().handle(call)


def tag(call) -> tuple[int, str]:
    m = TAG.match(last_user_message(call.json or {}))
    assert m, f"untagged call: {call.json}"
    return int(m.group(1)), m.group(2)


@pytest.fixture
def stack(tmp_path):
    procs: list[Proc] = []
    workers: dict[str, Proc] = {}
    net = Hosts(["hostA", "hostB"])
    cleanup = [net.close]
    try:
        gw = net.gateway
        db = FreshDatabase()
        cleanup.append(db.drop)
        from agentflow.store.db import dispose_all, migrate

        migrate(db.url)
        dispose_all()
        pg = Forwarder(gw, (db.host, db.port))
        cleanup.append(pg.stop)
        llm = SlowProvider(gw, held_client=net.address["hostA"]).start()
        cleanup.append(lambda: (llm.release.set(), llm.stop()))

        rport = free_port()
        (tmp_path / "redis").mkdir()
        redis_proc = Proc("redis", [binary("redis-server", "/usr/bin/redis-server"), "--port", str(rport),
                                    "--bind", "127.0.0.1", gw, "--protected-mode", "no", "--dir",
                                    str(tmp_path / "redis"), "--save", "", "--appendonly", "no"],
                          tmp_path / "redis.log")
        procs.append(redis_proc)
        import redis

        wait_until(lambda: redis.Redis(host=gw, port=rport, socket_timeout=1).ping(), 20, "redis-server answering")

        common = dict(OPENAI_API_KEY="sk-test-vanish-0000", NO_PROXY=f"127.0.0.1,localhost,{gw}",
                      no_proxy=f"127.0.0.1,localhost,{gw}")
        api_env = base_env(tmp_path / "home", DATABASE_URL=db.url, REDIS_URL=f"redis://127.0.0.1:{rport}/0",
                           OPENAI_BASE_URL=llm.base_url, **common)
        # what a worker host is configured with: the services' address on its network
        host_env = base_env(tmp_path / "home", DATABASE_URL=f"postgresql://{db.user}@{gw}:{pg.port}/{db.name}",
                            REDIS_URL=f"redis://{gw}:{rport}/0", OPENAI_BASE_URL=llm.base_url, **common)
        for name in net.names:
            workers[name] = Proc(name, net.argv(name, [sys.executable, "-m", "agentflow.cli", "worker"]),
                                 tmp_path / f"{name}.log", env=host_env)
        api = Api("api", api_env, tmp_path)
        procs.append(api)

        from celery import Celery

        pinger = Celery(broker=f"redis://127.0.0.1:{rport}/0")

        def both_ready() -> bool:
            for name, proc in workers.items():
                if not proc.alive():
                    raise RuntimeError(f"worker {name} exited: {proc.tail()}")
            seen = {n for r in pinger.control.ping(timeout=0.5) or [] for n in r}
            return {"celery@hostA", "celery@hostB"} <= seen

        wait_until(both_ready, 90, "a worker in each host answering a ping", interval=0.5)
        api.wait_healthy()
        yield net, api_env, api, llm, db, workers, pinger
    finally:
        for proc in workers.values():  # before their namespaces go
            proc.kill()
            proc.stop()
        for proc in reversed(procs):
            proc.stop()
        for step in reversed(cleanup):
            try:
                step()
            except Exception as exc:  # the rest must still go
                print(f"cleanup: {exc!r}")


def discarded(worker: Proc) -> dict[str, str]:
    """step key -> outcome ("succeeded"/"failed") of each late result the worker discarded."""
    return dict(re.findall(r"step (\S+): a late result is discarded \((\w+);", worker.tail(1_000_000)))


def step_rows(db) -> list[dict]:
    import psycopg
    from psycopg.rows import dict_row

    with psycopg.connect(db.url, row_factory=dict_row) as conn:
        return conn.execute("SELECT run_id, node_id, status, worker, attempt, step_key, finished_at FROM steps "
                            "WHERE node_type = 'llm' ORDER BY id").fetchall()


def test_a_worker_host_cut_off_mid_run_is_taken_over_and_its_late_results_are_discarded(stack):
    net, env, api, llm, db, workers, pinger = stack
    A, B = net.address["hostA"], net.address["hostB"]
    client = httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {token(env)}"}, timeout=30)
    assert client.post("/workflows", json=spec()).status_code == 201

    def submit(n: int) -> str:
        r = client.post("/workflows/vanish/runs", json={"input": {"user_input": "go", "metadata": {"n": n}}})
        assert r.status_code == 202, r.text
        return r.json()["run_id"]

    runs = {n: submit(n) for n in range(RUNS)}
    number = {run_id: n for n, run_id in runs.items()}

    # hostA finishes some steps first (those must never be paid again); from then on its
    # answers wait (a slow provider), and it is cut once both its slots are in a model call
    # and everything it was answered before is recorded
    wait_until(lambda: sum(1 for c in llm.calls_to("/v1/chat/completions") if c.client == A and c.answered) >= 2,
               60, "hostA answered twice", interval=0.1)
    llm.hold.set()

    def in_flight_on_a() -> set:
        return {tag(c) for c in llm.calls_to("/v1/chat/completions") if c.client == A and c.answered is None}

    def ready_to_cut() -> bool:
        held = in_flight_on_a()
        running = {(number[r["run_id"]], r["node_id"]) for r in step_rows(db)
                   if r["status"] == "running" and r["worker"] == "celery@hostA"}
        return len(held) == 2 and running == held

    wait_until(ready_to_cut, 60, "hostA with two model calls in flight and its earlier results recorded",
               interval=0.1)
    held = in_flight_on_a()
    net.cut("hostA")
    t_cut = time.time()
    done_on_a = {tag(c) for c in llm.calls_to("/v1/chat/completions") if c.client == A and c.answered}

    def b_recorded(step) -> bool:
        return any(r["status"] == "succeeded" and r["worker"] == "celery@hostB" and number[r["run_id"]] == step[0]
                   and r["node_id"] == step[1] for r in step_rows(db))

    try:
        wait_until(lambda: all(b_recorded(s) for s in held), TAKEOVER_LIMIT + 30,
                   "hostB recorded the steps hostA had in flight", interval=0.2)
    except TimeoutError as exc:
        raise AssertionError(f"{exc}\nhostB: {workers['hostB'].tail(4000)}") from None
    t_taken = time.time()
    calls = llm.calls_to("/v1/chat/completions")
    takeover = {s: min(c.time for c in calls if c.client == B and tag(c) == s) - t_cut for s in held}
    during = [c for c in calls if c.client == B and t_cut < c.time < t_taken]

    # the link comes back; hostA's calls are answered now, late: one succeeds, one fails
    # with a 500 that hostA would retry, had it not been fenced off
    a_calls = sorted((c for c in llm.calls_to("/v1/chat/completions") if c.client == A and c.answered is None),
                     key=lambda c: c.index)
    llm.fail_late.add(a_calls[-1].index)
    net.restore("hostA")
    t_back = time.time()
    llm.release.set()
    lost_keys = {r["step_key"] for r in step_rows(db) if r["worker"] == "celery@hostA" and r["status"] == "lost"}
    assert len(lost_keys) == 2, f"hostA's attempts closed as lost: {lost_keys}"
    try:
        wait_until(lambda: set(discarded(workers["hostA"])) == lost_keys, 90,
                   "hostA received its late answers and discarded them", interval=0.5)
    except TimeoutError as exc:
        raise AssertionError(f"{exc}\nhostA: {workers['hostA'].tail(4000)}") from None
    t_late = time.time()
    assert sorted(discarded(workers["hostA"]).values()) == ["failed", "succeeded"]

    def finished(run_id: str) -> dict | None:
        rec = client.get(f"/runs/{run_id}").json()
        return rec if rec["status"] in ("succeeded", "failed", "cancelled") else None

    wait_until(lambda: all(finished(r) for r in runs.values()), 90, "every run ended", interval=0.5)
    records = {n: finished(r) for n, r in runs.items()}
    failed = {n: rec["error"] for n, rec in records.items() if rec["status"] != "succeeded"}
    assert not failed, f"runs that did not succeed: {failed}"

    # hostA is back in the fleet: it answers a ping, and new runs all succeed
    wait_until(lambda: pinger.control.ping(destination=["celery@hostA"], timeout=0.5), 60,
               "hostA's worker answering a ping after the link came back", interval=0.5)
    t_ping = time.time()
    more = {n: submit(n) for n in range(RUNS, RUNS + 6)}
    number.update({run_id: n for n, run_id in more.items()})
    wait_until(lambda: all(finished(r) for r in more.values()), 90, "the runs submitted after the link came back")
    failed = {n: finished(r)["error"] for n, r in more.items() if finished(r)["status"] != "succeeded"}
    assert not failed, f"runs after the link came back that did not succeed: {failed}"
    runs.update(more)

    # ---- what was paid, counted at the server
    calls = llm.calls_to("/v1/chat/completions")
    by_step: dict[tuple[int, str], list] = {}
    for c in calls:
        by_step.setdefault(tag(c), []).append(c)
    rows = step_rows(db)
    for n in runs:
        for node in ("writer", "reviewer"):
            step = (n, node)
            got = by_step.get(step, [])
            mine = [r for r in rows if number[r["run_id"]] == n and r["node_id"] == node]
            ok = [r for r in mine if r["status"] == "succeeded"]
            assert len(ok) == 1, f"step {step}: {len(ok)} succeeded attempts: {mine}"
            done = ok[0]["finished_at"].timestamp()
            assert all(c.time < done for c in got), f"step {step} called after its result was recorded"
            if step in held:
                assert [(c.client, c.time < t_cut) for c in got] == [(A, True), (B, False)], \
                    f"step {step} in flight on hostA: calls {[(c.client, c.time - t_cut) for c in got]}"
                assert got[0].answered is not None and got[0].answered > t_back, "hostA's answer came before the link"
                assert [(r["status"], r["worker"]) for r in mine] == [("lost", "celery@hostA"),
                                                                      ("succeeded", "celery@hostB")], mine
            else:
                assert len(got) == 1, f"step {step} paid {len(got)} times: {[(c.client, c.time - t_cut) for c in got]}"
                assert len(mine) == 1, f"step {step}: attempts {mine}"

    # the trace shows each step's result once, and the run's output is the recorded one
    for n, run_id in runs.items():
        rec = client.get(f"/runs/{run_id}").json()
        ended = [(s["node_id"], s["status"]) for s in rec["steps"] if s["node_type"] == "llm"]
        assert ended.count(("writer", "succeeded")) == 1 and ended.count(("reviewer", "succeeded")) == 1, ended
        assert rec["state"]["text_result"].startswith(f"Answer: run={n} step=reviewer"), rec["state"]

    assert len(done_on_a) >= 2 and not done_on_a & held  # and each was called once (above)
    on_a_after = sum(1 for c in calls if c.client == A and c.time > t_back)
    assert all(t <= TAKEOVER_LIMIT for t in takeover.values()), \
        f"takeover took {max(takeover.values()):.1f} s after the cut (limit {TAKEOVER_LIMIT:g} s)"
    assert during, "hostB made no model call while hostA was cut off: the runs stood still"
    print(f"vanished host: hostA finished {len(done_on_a)} steps before the cut; takeover {', '.join(f'{t:.1f}' for t in sorted(takeover.values()))} s after the cut; "
          f"hostB made {len(during)} calls meanwhile; link back {t_back - t_cut:.1f} s after the cut, late "
          f"results discarded {t_late - t_back:.1f} s later; hostA answered a ping {t_ping - t_back:.1f} s after the "
          f"link came back and made {on_a_after} of the {2 * len(more)} calls of the runs submitted then")
