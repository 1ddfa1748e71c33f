"""The pins pyproject.toml sets because the code touches a library's insides:

- kombu `>=5.7,<5.8`: workers/compat.py patches its redis transport. The test shows the
  installed kombu still needs it (without the guard, closing a channel whose broker
  connection is gone raises AttributeError, which kills a Celery worker); when a kombu
  fixes that, this test fails and says to drop compat.py.
- redis `>=<floor>`: the limiter sends pre-packed EVALSHAs on redis-py's pooled
  connections (ratelimit/redis.py) and the lease is redis-py's Lock (workers/lease.py).
  The floor test installs exactly that redis-py version over this environment
  (`pip install --target`, first on PYTHONPATH) and runs the limiter's and the lease's
  Redis tests with it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

REPO = Path(__file__).resolve().parent.parent


def _requirement(name: str) -> Requirement:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    [req] = [Requirement(d) for d in deps if Requirement(d).name == name]
    return req


def _floor(req: Requirement) -> str:
    [floor] = [s.version for s in req.specifier if s.operator == ">="]
    return floor


def test_the_installed_kombu_is_in_the_range_compat_was_checked_against():
    import kombu

    assert Version(kombu.__version__) in _requirement("kombu").specifier


@pytest.mark.redis
def test_kombu_still_needs_the_dead_channel_guard():
    probe = """
from kombu import Connection
channel = Connection("redis://127.0.0.1:6379/15").channel()
channel.qos._delivered["tag-1"] = object()   # an unacked message
channel.connection.client = None               # what a lost broker connection leaves
try:
    channel.close()
except AttributeError as exc:
    print("AttributeError", exc)
else:
    print("closed cleanly")
"""
    # a fresh interpreter that never imports agentflow.workers (which installs the guard)
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, cwd="/")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("AttributeError"), (
        f"this kombu closes a dead channel cleanly ({out.stdout.strip()!r}): workers/compat.py "
        f"may no longer be needed; check its second case (ack on a dead channel) and drop it")


@pytest.mark.redis
def test_the_redis_floor_runs_the_limiter_and_lease_tests(tmp_path):
    floor = _floor(_requirement("redis"))
    overlay = tmp_path / "overlay"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(overlay),
                          f"redis=={floor}"], capture_output=True, text=True, timeout=300)
    assert pip.returncode == 0, pip.stderr[-2000:]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(overlay), str(REPO)])}
    version = subprocess.run([sys.executable, "-c", "import redis; print(redis.__version__)"],
                             capture_output=True, text=True, env=env, timeout=60)
    assert Version(version.stdout.strip()) == Version(floor), version.stderr
    tests = ["tests/ratelimit/test_limiter.py", "tests/ratelimit/test_resp.py",
             "tests/ratelimit/test_integration_points.py", "tests/distributed/test_lease.py",
             "tests/chaos/test_regressions.py::test_a_vanished_lease_is_taken_back_and_a_stolen_one_is_noticed"]
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "redis", *tests],
                         capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    summary = run.stdout.strip().splitlines()[-1] if run.stdout.strip() else run.stderr[-2000:]
    assert run.returncode == 0, f"redis-py {floor}: {summary}\n{run.stdout[-4000:]}"
    passed = re.search(r"(\d+) passed", summary)
    assert passed and int(passed.group(1)) >= 20 and "skipped" not in summary, summary
