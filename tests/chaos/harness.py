"""Chaos harness: real processes, real faults, and the books that must still balance.

A steady load of runs of a 4-node workflow (input `a` -> LLM `b` and LLM `c` in parallel ->
LLM join `d`) flows through a real `agentflow serve` (distributed mode) into real
`agentflow worker` processes (one run-driver worker, two node workers) and `agentflow beat`
(schedule ticks; recovery is the workers' sweep). Each phase injects one kind of fault while the load flows:

  worker SIGKILL     a random worker (driver or node worker, with its pool) every few seconds,
                     restarted under the same name right away
  Redis restart      the broker + result backend (a private redis-server on its own port, no
                     persistence: queued messages, results, leases and markers are all lost)
  Postgres drop      pg_terminate_backend() on every connection to the chaos database
  429 / 500          the model server answers 429 (Retry-After) on every third call, 500 on some
  slow node          node `c` answers after more than its timeout on two calls of three

Afterwards every accepted run must end `succeeded` or `failed` with a readable reason,
none may stay queued/running, no finished step may have run twice, no row may be lost or
duplicated. `report()` prints the table; `violations()` lists what broke.

The model server attributes each call to (run, node): the prompt of every node starts with
`[chaos tag=<run tag> node=<id>]`, the run tag travelling in the run's metadata.

Standalone: `python -m tests.chaos.harness --seconds 600` (needs the local PostgreSQL).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from agentflow.workers.launch import stop_process_groups
from tests.servers import Reply
from tests.servers.openai_server import OpenAIServer, last_user_message

TAG_RE = re.compile(r"\[chaos tag=([0-9a-f]+) node=(\w+)\]")
PAID_NODES = ("b", "c", "d")
ALL_NODES = ("a", "b", "c", "d")
SLOW_NODE = "c"
SLOW_TIMEOUT = 1.5      # node c's per-attempt timeout (s)
SLOW_SECONDS = 4.0      # how long a slow answer takes: well past that timeout
TERMINAL = ("succeeded", "failed", "cancelled")

FAULTS = {
    "kill": "worker SIGKILL",
    "redis": "Redis restart",
    "pg": "Postgres drop",
    "provider": "429 / 500 answers",
    "slow": "slow node > timeout",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def chaos_spec() -> dict:
    def tag(node: str) -> str:
        return "[chaos tag={metadata.run_tag} node=%s] " % node

    return {
        "id": "chaos-4", "name": "chaos: fan-out and join", "start_node": "a",
        "nodes": [
            {"id": "a", "type": "input"},
            {"id": "b", "type": "llm", "source": "gpt",
             "config": {"prompt": tag("b") + "summarise: {user_input}", "output_key": "draft_b"}},
            {"id": "c", "type": "llm", "source": "gpt",
             "config": {"prompt": tag("c") + "critique: {user_input}", "output_key": "draft_c",
                        "timeout_seconds": SLOW_TIMEOUT, "max_retries": 2}},
            {"id": "d", "type": "llm", "source": "gpt",
             "config": {"prompt": tag("d") + "join: {draft_b} | {draft_c}", "output_key": "final_output"}},
        ],
        "edges": [{"from": "a", "to": ["b", "c"]}, {"from": "b", "to": "d"}, {"from": "c", "to": "d"}],
        "sources": [{"id": "gpt", "kind": "llm", "model": "gpt-4o-mini", "api_key_env": "OPENAI_API_KEY",
                     "base_url_env": "OPENAI_BASE_URL"}],
    }


# ---------------------------------------------------------------- the model server


@dataclass
class Answer:
    tag: str
    node: str
    arrived: float
    answered: float
    late: bool  # answered after the client's timeout: the client had already given up


class ChaosLLMServer(OpenAIServer):
    """The test OpenAI server, attributing each call to (run tag, node), with a slow mode."""

    def __init__(self):
        super().__init__(responder=lambda req: "ok " + (self._who(req)[1] or "?"))
        self.slow_node: str | None = None
        self.answers: list[Answer] = []
        self._node_calls: collections.Counter = collections.Counter()

    @staticmethod
    def _who(request: dict) -> tuple[str | None, str | None]:
        m = TAG_RE.search(last_user_message(request or {}))
        return (m.group(1), m.group(2)) if m else (None, None)

    def handle(self, call):
        tag, node = self._who(call.json or {})
        late = False
        if node is not None and node == self.slow_node and call.path.endswith("/chat/completions"):
            with self._lock:
                self._node_calls[node] += 1
                late = self._node_calls[node] % 3 != 0  # two calls of three are too slow
            if late:
                time.sleep(SLOW_SECONDS)
        reply: Reply = super().handle(call)
        if tag is not None and reply.status == 200:
            with self._lock:
                self.answers.append(Answer(tag, node, call.time, time.time(), late))
        return reply

    def calls_by_key(self) -> dict[tuple[str, str], list]:
        """Every call (any answer) per (tag, node), with its arrival time."""
        out: dict[tuple[str, str], list] = collections.defaultdict(list)
        for c in self.calls:
            tag, node = self._who(c.json or {})
            if tag is not None:
                out[(tag, node)].append(c.time)
        return out


# ---------------------------------------------------------------- processes


class PrivateRedis:
    """A redis-server of our own on a free port, so restarting it disturbs nobody else."""

    def __init__(self, logdir: Path, port: int | None = None):
        self.port = port or free_port()
        self.logdir = logdir
        self.proc: subprocess.Popen | None = None
        self.restarts = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        log = open(self.logdir / "redis.log", "ab")
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--daemonize", "no", "--dir", str(self.logdir)],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        import redis

        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                if redis.Redis(port=self.port, socket_connect_timeout=0.5).ping():
                    return
            except redis.RedisError:
                time.sleep(0.05)
        raise RuntimeError("private redis-server did not start")

    def crash(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()  # SIGKILL: nothing is saved, every queue and key is gone
            self.proc.wait(timeout=10)

    def restart(self, down_for: float = 1.0) -> None:
        self.crash()
        time.sleep(down_for)
        self.start()
        self.restarts += 1

    def stop(self) -> None:
        self.crash()


class Procs:
    """`agentflow` processes (workers, API, beat), each in its own session, logs in files."""

    def __init__(self, env: dict, logdir: Path):
        self.env, self.logdir = env, logdir
        self.procs: dict[str, subprocess.Popen] = {}
        self.cmds: dict[str, list[str]] = {}

    def start(self, name: str, args: list[str]) -> subprocess.Popen:
        log = open(self.logdir / f"{name}.log", "ab")
        cmd = [sys.executable, "-m", "agentflow.cli", *args]
        proc = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs[name], self.cmds[name] = proc, args
        return proc

    def worker(self, name: str, queues: str, concurrency: int, pool: str = "prefork") -> None:
        self.start(name, ["worker", "--queues", queues, "--concurrency", str(concurrency), "--pool", pool,
                          "--hostname", f"{name}@%h", "--log-level", "info"])

    def kill(self, name: str) -> None:
        proc = self.procs[name]
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the main process and its pool children
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)

    def restart(self, name: str) -> None:
        self.start(name, self.cmds[name])

    def wait_workers(self, names, timeout: float = 90) -> None:
        from celery import Celery

        app = Celery(broker=self.env["REDIS_URL"])
        deadline, want = time.time() + timeout, set(names)
        try:
            while time.time() < deadline:
                seen = {n.split("@")[0] for r in (app.control.ping(timeout=0.5) or []) for n in r}
                if want <= seen:
                    return
                for n in want:
                    if self.procs[n].poll() is not None:
                        raise RuntimeError(f"{n} exited: {self.log(n)[-3000:]}")
            raise TimeoutError(f"workers {want - seen} not ready")
        finally:
            app.close()

    def log(self, name: str) -> str:
        path = self.logdir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop_all(self) -> None:
        stop_process_groups(self.procs.values(), grace=15)


# ---------------------------------------------------------------- load


@dataclass
class Submission:
    tag: str
    phase: str
    at: float
    status: int | None
    run_id: str | None = None
    error: str | None = None


class Load(threading.Thread):
    """Submits one run every `interval` seconds through the API, tagging each with the phase."""

    def __init__(self, api: str, workflow_id: str, interval: float):
        super().__init__(daemon=True, name="chaos-load")
        self.api, self.workflow_id, self.interval = api, workflow_id, interval
        self.phase = "warm-up"
        self.stop = threading.Event()
        self.submissions: list[Submission] = []

    def run(self) -> None:
        with httpx.Client(base_url=self.api, timeout=20) as client:
            n = 0
            while not self.stop.is_set():
                n += 1
                tag = uuid.uuid4().hex[:12]
                body = {"input": {"user_input": f"request {n}", "metadata": {"run_tag": tag}}}
                sub = Submission(tag, self.phase, time.time(), None)
                try:
                    r = client.post(f"/workflows/{self.workflow_id}/runs", json=body)
                    sub.status = r.status_code
                    if r.status_code == 202:
                        sub.run_id = r.json()["run_id"]
                    else:
                        sub.error = r.text[:300]
                except httpx.HTTPError as exc:
                    sub.error = f"{type(exc).__name__}: {exc}"
                self.submissions.append(sub)
                self.stop.wait(self.interval)


# ---------------------------------------------------------------- the run


@dataclass
class Plan:
    phases: list[tuple[str, float]]   # (fault kind, seconds), in order
    interval: float                   # seconds between submissions
    settle: float                     # seconds allowed after the load stops
    kill_every: float = 5.0
    redis_every: float = 15.0
    pg_every: float = 2.0
    label: str = "short"

    @classmethod
    def short(cls) -> "Plan":
        return cls([("kill", 16), ("redis", 16), ("pg", 10), ("provider", 10), ("slow", 10)],
                   interval=1.6, settle=100, kill_every=4.0, redis_every=6.0, label="short form")

    @classmethod
    def long(cls, seconds: float = 600) -> "Plan":
        kinds = ["kill", "redis", "pg", "provider", "slow"]
        each = 40.0
        phases = [(kinds[i % len(kinds)], each) for i in range(max(len(kinds), int(seconds // each)))]
        return cls(phases, interval=1.2, settle=180, kill_every=4.0, label=f"long form, {seconds / 60:.0f} min")


@dataclass
class Chaos:
    """Owns the cluster for one chaos session; `run(plan)` does the work."""

    base_env: dict
    db_url: str
    logdir: Path
    llm: ChaosLLMServer = field(default_factory=ChaosLLMServer)
    # "default": three `agentflow worker` with no arguments and no beat, as a user starts them;
    # "tuned": make up's layout (a threaded driver group, node groups, beat)
    layout: str = "tuned"
    seed: int = field(default_factory=lambda: int(os.environ.get("AF_CHAOS_SEED", "0")) or random.randrange(1 << 30))

    def __post_init__(self) -> None:
        self.redis = PrivateRedis(self.logdir)
        self.rng = random.Random(self.seed)
        self.events: list[tuple[float, str, str]] = []  # (time, fault kind, detail)
        self.kills: list[tuple[float, str]] = []         # (time, worker name)
        self.counts: collections.Counter = collections.Counter()
        self.api_port = free_port()
        self.procs: Procs | None = None
        self.load: Load | None = None
        self.phase_windows: list[tuple[str, float, float]] = []
        self.started = self.finished = 0.0

    # ------------------------------------------------------------ set-up

    def __enter__(self) -> "Chaos":
        self.llm.start()
        self.redis.start()
        env = dict(self.base_env, DATABASE_URL=self.db_url, REDIS_URL=self.redis.url,
                   OPENAI_API_KEY="sk-chaos-0000", OPENAI_BASE_URL=self.llm.base_url,
                   AGENTFLOW_VISIBILITY_TIMEOUT="8",
                   AGENTFLOW_SCHEDULE_TICK="5", AGENTFLOW_AUTH="off", AGENTFLOW_LOAD_EXAMPLES="0",
                   AGENTFLOW_RATE_IP_PER_MINUTE="1000000", AGENTFLOW_RATE_TENANT_PER_MINUTE="1000000",
                   AGENTFLOW_RATE_IP_BURST="100000", AGENTFLOW_RATE_TENANT_BURST="100000",
                   AGENTFLOW_PORT=str(self.api_port), PYTHONUNBUFFERED="1")
        self.env = env
        self.procs = Procs(env, self.logdir)
        if self.layout == "default":
            self.worker_names = ["w1", "w2", "w3"]
            for name in self.worker_names:
                self.procs.start(name, ["worker", "--hostname", f"{name}@%h", "--log-level", "info"])
        else:
            self.worker_names = ["driver", "nodes1", "nodes2"]
            self.procs.worker("driver", "runs,agentflow.control", 8, pool="threads")
            self.procs.worker("nodes1", "agentflow.llm", 2)
            self.procs.worker("nodes2", "agentflow.llm", 2)
            self.procs.start("beat", ["beat", "--log-level", "info"])
        self.procs.start("api", ["serve", "--port", str(self.api_port), "--log-level", "warning"])
        self.procs.wait_workers(self.worker_names)
        deadline = time.time() + 60
        while True:
            try:
                if httpx.get(f"{self.api}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline or self.procs.procs["api"].poll() is not None:
                raise RuntimeError(f"API did not start: {self.procs.log('api')[-3000:]}")
            time.sleep(0.2)
        r = httpx.post(f"{self.api}/workflows", json=chaos_spec(), timeout=30)
        assert r.status_code in (200, 201), r.text
        return self

    def __exit__(self, *exc) -> None:
        if self.load is not None:
            self.load.stop.set()
        if self.procs is not None:
            self.procs.stop_all()
        self.redis.stop()
        self.llm.stop()

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    # ------------------------------------------------------------ faults

    def _event(self, kind: str, detail: str) -> None:
        self.events.append((time.time(), kind, detail))
        self.counts[kind] += 1

    def kill_worker(self) -> None:
        name = self.rng.choice(self.worker_names)
        self.procs.kill(name)
        self.kills.append((time.time(), name))
        self._event("kill", name)
        self.procs.restart(name)

    def restart_redis(self) -> None:
        self.redis.restart(down_for=1.0)
        self._event("redis", f"port {self.redis.port}")

    def drop_postgres(self) -> None:
        import psycopg

        admin = self.db_url.rsplit("/", 1)[0] + "/postgres"
        name = self.db_url.rsplit("/", 1)[1]
        with psycopg.connect(admin, autocommit=True) as conn:
            n = conn.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                             "WHERE datname = %s AND pid <> pg_backend_pid()", (name,)).fetchone()[0]
        self._event("pg", f"{n} connections")

    def _phase(self, kind: str, seconds: float) -> None:
        start = time.time()
        end = start + seconds
        self.load.phase = kind
        if kind == "provider":
            self.llm.fail_every(3, status=429, retry_after=0.5)
            self.llm.fail_every(10, status=500)
            self._event("provider", "429 every 3rd call, 500 every 10th")
        elif kind == "slow":
            self.llm.slow_node = SLOW_NODE
            self._event("slow", f"node {SLOW_NODE}: 2 calls of 3 take {SLOW_SECONDS:g} s (timeout {SLOW_TIMEOUT:g} s)")
        every = {"kill": self.plan.kill_every, "redis": self.plan.redis_every, "pg": self.plan.pg_every}.get(kind)
        act = {"kill": self.kill_worker, "redis": self.restart_redis, "pg": self.drop_postgres}.get(kind)
        next_at = start + min(2.0, seconds / 3)
        while time.time() < end:
            if act is not None and time.time() >= next_at:
                act()
                next_at = time.time() + every * self.rng.uniform(0.7, 1.3)
            time.sleep(0.1)
        self.llm.clear_faults()
        self.llm.slow_node = None
        self.phase_windows.append((kind, start, time.time()))

    def run(self, plan: Plan) -> "Chaos":
        self.plan = plan
        self.started = time.time()
        self.load = Load(self.api, "chaos-4", plan.interval)
        self.load.start()
        for kind, seconds in plan.phases:
            self._phase(kind, seconds)
        self.load.stop.set()
        self.load.join(timeout=30)
        self.settle(plan.settle)
        self.finished = time.time()
        return self

    def settle(self, timeout: float) -> None:
        """Wait until every accepted run has ended (or the time is up)."""
        ids = [s.run_id for s in self.load.submissions if s.run_id]
        deadline = time.time() + timeout
        while time.time() < deadline:
            rows = self.runs()
            if all(rows.get(i, {}).get("status") in TERMINAL for i in ids):
                return
            time.sleep(0.5)

    # ------------------------------------------------------------ the books

    def _db(self):
        import psycopg
        from psycopg.rows import dict_row

        return psycopg.connect(self.db_url, row_factory=dict_row)

    def runs(self) -> dict[str, dict]:
        with self._db() as conn:
            return {r["id"]: r for r in conn.execute(
                "SELECT id, status, error, attempts, input FROM runs WHERE workflow_id = 'chaos-4'")}

    def steps(self) -> list[dict]:
        with self._db() as conn:
            return list(conn.execute(
                "SELECT id, run_id, node_id, status, step_key, worker, started_at, finished_at, error "
                "FROM steps ORDER BY id"))

    def books(self) -> dict[str, Any]:
        """Per phase: accepted, refused, succeeded, failed (with reasons), lost, paid twice."""
        runs, steps = self.runs(), self.steps()
        calls = self.llm.calls_by_key()
        answers: dict[tuple[str, str], list[Answer]] = collections.defaultdict(list)
        for a in self.llm.answers:
            answers[(a.tag, a.node)].append(a)
        by_run: dict[str, list[dict]] = collections.defaultdict(list)
        for st in steps:
            by_run[st["run_id"]].append(st)
        subs = self.load.submissions
        accepted = {s.run_id: s for s in subs if s.run_id}
        rows: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        reasons: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        problems: list[str] = []
        recalled = 0
        refusals: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        for s in subs:
            rows[s.phase]["accepted" if s.run_id else "refused"] += 1
            if not s.run_id:
                refusals[s.phase][normalize(f"{s.status or 'no answer'}: {s.error or ''}")[:140]] += 1
        for run_id, sub in accepted.items():
            row = rows[sub.phase]
            run = runs.get(run_id)
            if run is None:
                row["lost"] += 1
                problems.append(f"run {run_id} ({sub.phase}) was accepted but is not stored")
                continue
            if run["status"] not in ("succeeded", "failed"):
                row["lost"] += 1
                problems.append(f"run {run_id} ({sub.phase}) is still {run['status']} after the settle time")
                continue
            row[run["status"]] += 1
            if run["status"] == "failed":
                reason = run["error"] or ""
                if not readable(reason):
                    problems.append(f"run {run_id} failed without a readable reason: {reason!r}")
                reasons[sub.phase][normalize(reason)] += 1
            run_steps = by_run.get(run_id, [])
            ok = collections.Counter(st["node_id"] for st in run_steps if st["status"] == "succeeded")
            if run["status"] == "succeeded" and any(ok[n] != 1 for n in ALL_NODES):
                row["dup_rows"] += 1
                problems.append(f"run {run_id} succeeded with step rows {dict(ok)} (want one of each)")
            elif any(v > 1 for v in ok.values()):
                row["dup_rows"] += 1
                problems.append(f"run {run_id}: a step succeeded more than once: {dict(ok)}")
            tag = sub.tag
            for node in PAID_NODES:
                done = [st for st in run_steps if st["node_id"] == node and st["status"] == "succeeded"]
                if not done:
                    continue
                finished = min(st["finished_at"].timestamp() for st in done)
                paid = [a for a in answers.get((tag, node), []) if not a.late]
                after = [t for t in calls.get((tag, node), []) if t > finished + 0.001]
                killed = sum(1 for st in run_steps if st["node_id"] == node and st["status"] == "lost"
                             and self._killed(st))
                twice = len(done) > 1 or bool(after) or len(paid) > 1 + killed
                if len(paid) > 1 and not twice:
                    recalled += 1
                if twice:
                    row["paid_twice"] += 1
                    problems.append(f"run {run_id} node {node}: {len(done)} succeeded rows, {len(paid)} answered "
                                    f"calls ({killed} attempts lost to a SIGKILL), {len(after)} calls after it "
                                    f"had succeeded")
        stray = set(runs) - set(accepted)
        for run_id in stray:  # refused submissions may have left a row: it must say why
            if runs[run_id]["status"] != "failed" or "could not be queued" not in (runs[run_id]["error"] or ""):
                problems.append(f"run {run_id} exists but was never accepted: {runs[run_id]['status']}")
        return {"rows": rows, "reasons": reasons, "refusals": refusals, "problems": problems, "recalled": recalled,
                "stray_refused": len(stray)}

    def _killed(self, step: dict) -> bool:
        """Was this (lost) attempt's worker SIGKILLed while it ran?"""
        worker = (step["worker"] or "").split("@")[0]
        start = step["started_at"].timestamp()
        end = step["finished_at"].timestamp() if step["finished_at"] else time.time()
        return any(name == worker and start - 0.5 <= t <= end + 0.5 for t, name in self.kills)

    def report(self) -> str:
        b = self.books()
        self._books = b
        kinds = [k for k in FAULTS if any(p[0] == k for p in self.plan.phases)]
        head = (f"{'fault injected':<22}{'faults':>7}{'accepted':>10}{'succeeded':>10}{'failed':>8}"
                f"{'lost':>6}{'paid twice':>12}{'refused':>9}")
        lines = [f"AgentFlow chaos, {self.plan.label}: {int(self.finished - self.started)} s, seed {self.seed}",
                 "cluster: agentflow serve (distributed) + driver worker (threads x8) + 2 node workers "
                 "(prefork x2) + beat; the workers' recovery sweep every 5 s; private Redis; fresh Postgres db",
                 "workflow: a (input) -> b, c (LLM, parallel) -> d (LLM join); "
                 f"{len(self.load.submissions)} submissions, one every {self.plan.interval:g} s",
                 "", head, "-" * len(head)]
        total = collections.Counter()
        for kind in kinds:
            r = b["rows"].get(kind, collections.Counter())
            total.update(r)
            total["faults"] += self.counts[kind]
            lines.append(f"{FAULTS[kind]:<22}{self.counts[kind]:>7}{r['accepted']:>10}{r['succeeded']:>10}"
                         f"{r['failed']:>8}{r['lost']:>6}{r['paid_twice']:>12}{r['refused']:>9}")
        lines.append("-" * len(head))
        lines.append(f"{'total':<22}{total['faults']:>7}{total['accepted']:>10}{total['succeeded']:>10}"
                     f"{total['failed']:>8}{total['lost']:>6}{total['paid_twice']:>12}{total['refused']:>9}")
        lines.append("")
        lines.append("failed, by reason (ids and numbers masked):")
        any_reason = False
        for kind in kinds:
            for reason, n in b["reasons"].get(kind, collections.Counter()).most_common():
                any_reason = True
                lines.append(f"  {FAULTS[kind]:<20} {n:>4}  {reason[:150]}")
        if not any_reason:
            lines.append("  (none)")
        lines.append("refused, by answer:")
        any_refusal = False
        for kind in kinds:
            for answer, n in b["refusals"].get(kind, collections.Counter()).most_common():
                any_refusal = True
                lines.append(f"  {FAULTS[kind]:<20} {n:>4}  {answer}")
        if not any_refusal:
            lines.append("  (none)")
        lines += [
            "",
            "definitions:",
            "  accepted    POST /workflows/{id}/runs answered 202; refused = any other answer (e.g. 503 while",
            "              Redis is down: the client is told, nothing is lost)",
            "  rows        a run is counted under the fault being injected when it was accepted; one still in",
            "              flight when the next phase starts meets that fault too",
            "  lost        an accepted run that is missing, or not succeeded/failed once the load stopped and",
            f"              {self.plan.settle:g} s passed (must be 0)",
            "  paid twice  a step recorded `succeeded` whose provider answered 200 more than once (not counting",
            "              answers that came after the client's timeout, nor one re-call per attempt whose worker",
            "              was SIGKILLed mid-step), or that was called again after it had succeeded, or that has",
            "              more than one succeeded row (must be 0)",
            f"  re-called   steps legitimately called again after a SIGKILL interrupted them: {b['recalled']}",
            "  breaker     five failures in a row (timeouts, 5xx; not 429s) open the source's circuit breaker in",
            "              that worker process for 30 s: calls fail fast with 'source ... is failing', also into the",
            "              next phase",
            f"  Redis restarts lost every queued message, result and lease; runs were recovered by the sweep",
            f"  and by drivers re-sending node tasks whose messages were gone.",
        ]
        if b["problems"]:
            lines += ["", "VIOLATIONS:"] + [f"  {p}" for p in b["problems"][:50]]
        return "\n".join(lines)

    def violations(self) -> list[str]:
        return (getattr(self, "_books", None) or self.books())["problems"]


_MASKS = [(re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"), "<id>"),
          (re.compile(r"\b\d+(\.\d+)?\b"), "N")]


def normalize(reason: str) -> str:
    for rx, repl in _MASKS:
        reason = rx.sub(repl, reason)
    return " ".join(reason.split())


def readable(reason: str) -> bool:
    return bool(reason.strip()) and "Traceback" not in reason and len(reason) < 2000


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="AgentFlow chaos run")
    ap.add_argument("--seconds", type=float, default=0, help="long form of this length (0: short form)")
    ap.add_argument("--out", help="also write the table to this file")
    args = ap.parse_args(argv)
    from tests.databases import fresh_database

    plan = Plan.long(args.seconds) if args.seconds else Plan.short()
    logdir = Path(f"/tmp/af-chaos-{uuid.uuid4().hex[:6]}")
    logdir.mkdir()
    with fresh_database("af_chaos_") as db_url, Chaos(dict(os.environ), db_url, logdir) as chaos:
        chaos.run(plan)
        table = chaos.report()
    print(table)
    print(f"(logs in {logdir})")
    if args.out:
        Path(args.out).write_text(table + "\n")
    return 1 if chaos.violations() else 0


if __name__ == "__main__":
    sys.exit(main())
