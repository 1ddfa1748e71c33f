"""Start and stop `agentflow worker` processes from Python: the distributed tests and the
benches run real workers this way (each in its own process group, so a kill takes its pool
children too)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path


class WorkerProcesses:
    """`logdir`: each worker's output goes to `<logdir>/<name>.log` (None: discarded).
    `python`: the interpreter the workers run (another environment's, e.g. one with plugins)."""

    def __init__(self, env: dict, logdir: Path | None = None, python: str | None = None):
        self.env, self.logdir, self.procs = env, logdir, {}
        self.python = python or sys.executable

    def start(self, name: str, queues: str | None = None, concurrency: int | None = 2,
              extra_env: dict | None = None, pool: str | None = "prefork", log_level: str = "info") -> subprocess.Popen:
        """`queues`, `concurrency`, `pool` None: `agentflow worker`'s own defaults, as a user starts it."""
        out = open(self.logdir / f"{name}.log", "ab") if self.logdir is not None else subprocess.DEVNULL
        env = dict(self.env, **(extra_env or {}))
        argv = [self.python, "-m", "agentflow.cli", "worker", "--hostname", f"{name}@%h", "--log-level", log_level]
        for flag, value in (("--queues", queues), ("--concurrency", concurrency), ("--pool", pool)):
            if value is not None:
                argv += [flag, str(value)]
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs[name] = proc
        return proc

    def wait_ready(self, names, timeout: float = 60) -> None:
        """Until every named worker answers a Celery ping."""
        from celery import Celery

        from ..redisconn import celery_url
        from ..settings import RedisConfig

        url, sentinel = celery_url(RedisConfig.from_env(self.env))
        app = Celery(broker=url, broker_transport_options=sentinel)
        deadline = time.time() + timeout
        want = set(names)
        while time.time() < deadline:
            replies = app.control.ping(timeout=0.5) or []
            seen = {n.split("@")[0] for r in replies for n in r}
            if want <= seen:
                return
            for n in want:
                if self.procs[n].poll() is not None:
                    raise RuntimeError(f"worker {n} exited: {self.log(n)[-3000:]}")
        raise TimeoutError(f"workers {want} not ready; log: {[self.log(n)[-1500:] for n in want]}")

    def kill(self, name: str, sig=signal.SIGKILL) -> None:
        proc = self.procs[name]
        try:
            os.killpg(proc.pid, sig)  # the main process and its pool children
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)

    def log(self, name: str) -> str:
        if self.logdir is None:
            return "(no log kept)"
        return (self.logdir / f"{name}.log").read_text(errors="replace")

    def stop_all(self) -> None:
        stop_process_groups(self.procs.values(), grace=20)


def stop_process_groups(procs, grace: float) -> None:
    """SIGTERM each process's group, wait `grace` seconds for each, then SIGKILL what is
    left (processes started with `start_new_session=True`)."""
    procs = list(procs)
    for proc in procs:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    for proc in procs:
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=10)
