"""A real `agentflow serve` process for tests: a free port, waited for until /health
answers, its output in a log file, stopped (terminate, then kill) on exit."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env(home: Path, drop_prefixes: tuple[str, ...] = (), **extra: str) -> dict[str, str]:
    """This process's environment without AgentFlow's own settings (nor DATABASE_URL,
    REDIS_URL, nor names starting with `drop_prefixes`), for a server on `home`."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AGENTFLOW_", *drop_prefixes)) and k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(AGENTFLOW_HOME=str(home), AGENTFLOW_LOAD_EXAMPLES="0", PYTHONUNBUFFERED="1", **extra)
    return env


class AgentflowServe:
    def __init__(self, env: dict[str, str], log_path: Path, *args: str, port: int | None = None):
        self.env, self.log_path, self.args = env, log_path, args
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def __enter__(self) -> "AgentflowServe":
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "agentflow.cli", "serve", "--port", str(self.port),
                                          "--host", "127.0.0.1", *self.args], env=self.env, stdout=log,
                                         stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"agentflow serve exited: {self.log()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.__exit__()
                raise TimeoutError(f"agentflow serve did not start: {self.log()[-3000:]}")
            time.sleep(0.2)

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
