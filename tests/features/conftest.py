"""Fixtures for the issue-8 feature tests: the in-process API (TestClient on a private
SQLite store), the triage environment (test OpenAI server + Postgres shop), and a real
`agentflow serve` subprocess for the SDK."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import httpx
import pytest

from tests.api.conftest import api_env, client, make_client  # noqa: F401  (fixtures)

CANARY = "sk-features-canary-0123456789"


@pytest.fixture
def triage_api(api_env, openai_server, shop_db_pg):
    """Environment for running the reference spec through the in-process API."""
    api_env.setenv("OPENAI_API_KEY", CANARY)
    api_env.setenv("OPENAI_BASE_URL", openai_server.base_url)
    api_env.setenv("SHOP_DSN", shop_db_pg)
    return openai_server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    def __init__(self, proc: subprocess.Popen, url: str, log_path):
        self.proc, self.url, self.log_path = proc, url, log_path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture(scope="module")
def serve_factory(tmp_path_factory):
    """serve(**env) -> a running `agentflow serve` (embedded mode) on a free port; stopped
    at the end of the test module."""
    procs: list[Served] = []
    tmp_path = tmp_path_factory.mktemp("serve")

    def serve(**extra_env: str) -> Served:
        port = free_port()
        home = tmp_path / f"serve-home-{port}"
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
        env.update(AGENTFLOW_HOME=str(home), AGENTFLOW_LOAD_EXAMPLES="0",
                   PYTHONUNBUFFERED="1", **extra_env)
        log_path = tmp_path / f"serve-{port}.log"
        log = open(log_path, "wb")
        proc = subprocess.Popen([sys.executable, "-m", "agentflow.cli", "serve", "--port", str(port),
                                 "--host", "127.0.0.1", "--log-level", "warning"],
                                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        served = Served(proc, f"http://127.0.0.1:{port}", log_path)
        procs.append(served)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"agentflow serve exited: {served.log()[-3000:]}")
            try:
                if httpx.get(served.url + "/health", timeout=1).status_code == 200:
                    return served
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"agentflow serve did not start: {served.log()[-3000:]}")

    yield serve
    for served in procs:
        if served.proc.poll() is None:
            served.proc.terminate()
            try:
                served.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                served.proc.kill()
