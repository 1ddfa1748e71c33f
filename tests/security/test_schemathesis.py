"""schemathesis against the OpenAPI document of a real `agentflow serve` with auth on.

The server runs embedded with AGENTFLOW_AUTH=required; schemathesis sends an admin token
and checks every operation but the SSE stream for 5xx answers, answers that break their
own documented schema, and operations that ignore their declared bearer auth. Runs take
about a minute (`AGENTFLOW_ST_MAX_EXAMPLES`, `AGENTFLOW_ST_SEED` change the budget and seed).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.needs import missing
from tests.servers.agentflow_serve import AgentflowServe, server_env

ROOT = Path(__file__).resolve().parents[2]
SECRET = "schemathesis-jwt-secret-0123456789abcdef"


def _st() -> list[str]:
    exe = Path(sys.executable).with_name("st")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("st")
    if found:
        return [found]
    missing("schemathesis is not installed (pip install -e '.[dev]')")


@pytest.fixture
def server(tmp_path):
    home = tmp_path / "home"
    env = server_env(home, drop_prefixes=("OPENAI_",), AGENTFLOW_AUTH="required", AGENTFLOW_JWT_SECRET=SECRET,
                     AGENTFLOW_RATE_TENANT_PER_MINUTE="0", AGENTFLOW_RATE_IP_PER_MINUTE="0",
                     AGENTFLOW_WEBHOOK_ATTEMPTS="1", AGENTFLOW_WEBHOOK_TIMEOUT="2", AGENTFLOW_LOAD_EXAMPLES="1")
    with AgentflowServe(env, tmp_path / "serve.log") as served:
        yield served.url, home, served.log_path


def test_schemathesis_finds_no_server_errors_or_schema_violations(server, tmp_path):
    from agentflow.api.auth import issue_token
    from agentflow.settings import Settings

    base, home, log_path = server
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AGENTFLOW_JWT_SECRET", SECRET)
        mp.setenv("AGENTFLOW_HOME", str(home))
        token = issue_token("default", "admin", 3600, "schemathesis", settings=Settings())
    assert httpx.get(f"{base}/workflows").status_code == 401  # auth really is on
    assert httpx.get(f"{base}/workflows", headers={"Authorization": f"Bearer {token}"}).status_code == 200

    cmd = [*_st(), "run", f"{base}/openapi.json",
           "--header", f"Authorization: Bearer {token}",
           "--checks", "not_a_server_error,response_schema_conformance,ignored_auth",
           "--exclude-path-regex", "/events$",
           "--max-examples", os.environ.get("AGENTFLOW_ST_MAX_EXAMPLES", "20"),
           "--seed", os.environ.get("AGENTFLOW_ST_SEED", "1"),
           "--workers", "1", "--request-timeout", "20", "--no-color"]
    started = time.monotonic()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=400, cwd=tmp_path,
                         env={**os.environ, "SCHEMATHESIS_HOOKS": ""})
    report = out.stdout + out.stderr
    tail = "\n".join(report.splitlines()[-80:])
    server_log = "\n".join(log_path.read_text(errors="replace").splitlines()[-60:])
    assert out.returncode == 0, f"schemathesis failed:\n{tail}\n--- server log ---\n{server_log}"
    assert "passed" in report and "Failures:" not in report, tail
    assert "unhandled error" not in log_path.read_text(errors="replace"), server_log  # no 500 at all
    print(f"schemathesis took {time.monotonic() - started:.0f} s:\n{tail}")
