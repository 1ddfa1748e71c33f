"""Skips cannot hide: a pytest run that skipped anything fails, a missing service fails the
test that needs it, and scripts/services.sh and scripts/ensure_tools.sh exit non-zero
naming what is missing. Each case runs the real thing in a subprocess."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SKIPPING = """
import pytest

def test_runs():
    assert True

def test_skips():
    pytest.skip("nothing to see here")
"""

NEEDS_A_SERVICE = """
from tests.needs import missing

def test_needs_redis():
    missing("Redis is not reachable at redis://127.0.0.1:1/0")
"""


def _pytest(tmp_path: Path, source: str, allow: str | None) -> subprocess.CompletedProcess:
    (tmp_path / "test_tiny.py").write_text(textwrap.dedent(source))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env["PYTHONPATH"] = str(ROOT)
    env.pop("AGENTFLOW_TEST_ALLOW_SKIP", None)
    if allow is not None:
        env["AGENTFLOW_TEST_ALLOW_SKIP"] = allow
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.skip_policy",
                           "--rootdir", str(tmp_path), str(tmp_path / "test_tiny.py")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def test_a_skipped_test_fails_the_run(tmp_path):
    run = _pytest(tmp_path, SKIPPING, allow=None)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "1 passed, 1 skipped" in run.stdout      # pytest's own closing line is still there
    assert "skipped: 1 - FAILED" in run.stdout


def test_make_test_fast_allows_skips(tmp_path):
    run = _pytest(tmp_path, SKIPPING, allow="1")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 passed, 1 skipped" in run.stdout and "skipped: 1 (allowed" in run.stdout
    assert _pytest(tmp_path, SKIPPING, allow="0").returncode == 1   # what `make test` sets


def test_a_missing_service_fails_the_test_unless_skips_are_allowed(tmp_path):
    run = _pytest(tmp_path, NEEDS_A_SERVICE, allow=None)
    assert run.returncode == 1 and "1 failed" in run.stdout, run.stdout
    assert "Redis is not reachable at redis://127.0.0.1:1/0" in run.stdout
    run = _pytest(tmp_path, NEEDS_A_SERVICE, allow="1")
    assert run.returncode == 0 and "1 skipped" in run.stdout, run.stdout


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]   # nothing listens once the socket is closed


def _bare_path(tmp_path: Path) -> str:
    """A PATH with the shell tools the scripts use but no postgres, redis or apt-get: a
    machine without those services (so the scripts cannot start or install them)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("seq", "sleep", "ls", "head", "mkdir", "grep", "id"):
        found = shutil.which(tool)
        assert found, tool
        (bin_dir / tool).symlink_to(found)
    return str(bin_dir)


def test_services_script_fails_naming_what_is_missing(tmp_path):
    pg_port, redis_port = _closed_port(), _closed_port()
    env = {**os.environ, "PATH": _bare_path(tmp_path),
           "AF_SERVICES_PG_PORT": str(pg_port), "AF_SERVICES_REDIS_PORT": str(redis_port)}
    run = subprocess.run(["/bin/bash", str(ROOT / "scripts" / "services.sh")], env=env,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode != 0
    assert f"MISSING - PostgreSQL (nothing answers on 127.0.0.1:{pg_port}" in run.stderr, run.stderr
    assert f"MISSING - Redis (nothing answers on 127.0.0.1:{redis_port}" in run.stderr, run.stderr


def test_services_script_passes_when_both_answer():
    run = subprocess.run(["bash", str(ROOT / "scripts" / "services.sh")], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "PostgreSQL on 127.0.0.1:5432" in run.stdout and "Redis on 127.0.0.1:6379" in run.stdout


def test_tools_script_fails_when_it_cannot_install(tmp_path):
    missing_binary = tmp_path / "no-chromium"
    env = {**os.environ, "PATH": _bare_path(tmp_path), "AGENTFLOW_CHROMIUM": str(missing_binary)}
    run = subprocess.run(["/bin/bash", str(ROOT / "scripts" / "ensure_tools.sh")], env=env,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode != 0
    assert f"chromium: MISSING - {missing_binary} is not there and apt-get is not available" in run.stderr, run.stderr


def test_tools_script_passes_when_everything_is_there():
    run = subprocess.run(["/bin/bash", str(ROOT / "scripts" / "ensure_tools.sh")], capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    for tool in ("chromium", "nginx", "pgbouncer", "iproute2"):
        assert f"{tool}: /" in run.stdout or f"{tool}: installed /" in run.stdout, run.stdout
