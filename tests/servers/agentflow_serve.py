"""A real `agentflow serve` process for tests: a free port, waited for until /health
answers, its output in a log file, stopped (terminate, then kill) on exit. The one way the
tests start a server, so a change to how `serve` starts is made once."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from agentflow.workers.launch import stop_process_groups

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def agentflow_command() -> list[str]:
    """The installed `agentflow` script, as a user runs it (else `python -m agentflow.cli`)."""
    script = Path(sys.executable).with_name("agentflow")
    if script.exists():
        return [str(script)]
    found = shutil.which("agentflow")
    return [found] if found else [sys.executable, "-m", "agentflow.cli"]


def server_env(home: Path, drop_prefixes: tuple[str, ...] = (), **extra: str) -> dict[str, str]:
    """This process's environment without AgentFlow's own settings (nor DATABASE_URL,
    REDIS_URL, nor names starting with `drop_prefixes`), for a server on `home`."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AGENTFLOW_", *drop_prefixes)) and k not in ("DATABASE_URL", "REDIS_URL")}
    env.update({"AGENTFLOW_HOME": str(home), "AGENTFLOW_LOAD_EXAMPLES": "0", "PYTHONUNBUFFERED": "1", **extra})
    return env


class AgentflowServe:
    """`with AgentflowServe(env, log_path) as srv:` or `start()`/`stop()`, which may be
    called again to restart in place (same port, same database). `python` runs
    `-m agentflow.cli` with another interpreter (a venv a plugin was installed into);
    `script` runs this environment's installed `agentflow` script instead."""

    def __init__(self, env: dict[str, str], log_path: Path, *args: str, port: int | None = None,
                 timeout: float = 60, script: bool = False, python: str | None = None):
        if script and python:
            raise ValueError("script runs this environment's `agentflow`; python names another interpreter")
        self.env, self.log_path, self.args, self.timeout = env, log_path, args, timeout
        self.command = agentflow_command() if script else [python or sys.executable, "-m", "agentflow.cli"]
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def start(self) -> "AgentflowServe":
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([*self.command, "serve", "--port", str(self.port), "--host", "127.0.0.1",
                                          *self.args], env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                         cwd=ROOT, start_new_session=True)
        deadline = time.monotonic() + self.timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"agentflow serve exited with {self.proc.returncode}: {self.log()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"agentflow serve did not answer /health in {self.timeout:.0f} s: {self.log()[-3000:]}")
            time.sleep(0.2)

    def stop(self) -> None:
        # the whole process group: serve's children (stdio MCP servers) go with it
        if self.proc is not None:
            stop_process_groups([self.proc], grace=15)

    def __enter__(self) -> "AgentflowServe":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
