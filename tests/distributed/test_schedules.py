"""Celery beat fires schedules kept in the database; edits apply without restarting beat."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid

import pytest
from sqlalchemy import func, select

from tests.helpers import rules_spec

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(180)]


def _session(env):
    from agentflow.store.db import session_factory

    return session_factory(env["DATABASE_URL"])


def _runs_of(env, workflow_id, status=None):
    from agentflow.store.models import Run

    with _session(env)() as s:
        q = select(func.count()).select_from(Run).where(Run.workflow_id == workflow_id)
        if status:
            q = q.where(Run.status == status)
        return s.scalar(q)


@pytest.fixture(scope="module")
def beat(dist_env, workers, tmp_path_factory):
    workers.start("sdriver", "runs,agentflow.control", concurrency=2)
    workers.wait_ready(["sdriver"])
    log = open(tmp_path_factory.mktemp("beat") / "beat.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "agentflow.cli", "beat", "--log-level", "info"],
                            env=dist_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    yield proc
    proc.terminate()
    proc.wait(timeout=20)


def test_interval_schedule_produces_runs_and_edits_apply_live(dist_env, beat):
    from agentflow.graph.spec import spec_hash
    from agentflow.store.models import Schedule, Workflow, WorkflowVersion

    spec = rules_spec(id="scheduled-" + uuid.uuid4().hex[:6])
    sched_id = str(uuid.uuid4())
    with _session(dist_env).begin() as s:
        s.add(Workflow(tenant_id="default", id=spec["id"], name=spec["name"], current_version=1))
        s.add(WorkflowVersion(tenant_id="default", workflow_id=spec["id"], version=1, spec=spec,
                              spec_hash=spec_hash(spec)))
        s.add(Schedule(id=sched_id, tenant_id="default", workflow_id=spec["id"], interval_seconds=1.0,
                       input={"user_input": "tick", "metadata": {"tier": "paid"}}, enabled=True))

    deadline = time.time() + 60
    while time.time() < deadline and _runs_of(dist_env, spec["id"], "succeeded") < 3:
        time.sleep(0.3)
    assert _runs_of(dist_env, spec["id"], "succeeded") >= 3, "beat fired the schedule every second"

    with _session(dist_env).begin() as s:  # disable it through the database, beat keeps running
        s.get(Schedule, sched_id).enabled = False
    time.sleep(2.0)
    frozen = _runs_of(dist_env, spec["id"])
    time.sleep(3.0)
    assert _runs_of(dist_env, spec["id"]) == frozen, "a disabled schedule stops firing without a beat restart"
    assert beat.poll() is None
