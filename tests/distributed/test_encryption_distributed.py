"""Encryption at rest in distributed mode: real `agentflow worker` processes write the steps
and the run driver's LangGraph checkpoints; with AGENTFLOW_ENCRYPTION_KEY set on the API and
the workers, a canary in a run's input and in the LLM's answer comes back from the API and
is nowhere in a pg_dump of the whole database (checkpoint tables included)."""

from __future__ import annotations

import json
import subprocess
import uuid

import pytest

from tests.api.support import wait_run
from tests.distributed.conftest import api_client, dist_env, workers  # noqa: F401  (fixtures)
from tests.security.test_encryption import kid_of, llm_spec, new_key
from tests.servers.openai_server import OpenAIServer

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(240)]
KEY = new_key()
ANSWER = f"ANSWER-CANARY-{uuid.uuid4().hex}"


@pytest.fixture(scope="module")
def cluster(dist_env, workers):
    with OpenAIServer() as llm:
        llm.responder = lambda req: f"the answer is {ANSWER}"
        extra = {"OPENAI_API_KEY": "sk-dist-encryption-0000", "OPENAI_BASE_URL": llm.base_url,
                 "AGENTFLOW_ENCRYPTION_KEY": KEY}
        dist_env.update(extra)
        workers.env.update(extra)
        workers.start("driver", "runs,agentflow.control", concurrency=2)
        workers.start("nodes", "agentflow.llm,agentflow.db,agentflow.api,agentflow.image", concurrency=2)
        workers.wait_ready(["driver", "nodes"])
        yield llm


@pytest.fixture
def api(cluster, dist_env, monkeypatch):
    from agentflow.store import crypto

    with api_client(dist_env, monkeypatch, ("OPENAI_API_KEY", "OPENAI_BASE_URL", "AGENTFLOW_ENCRYPTION_KEY")) as client:
        yield client
    crypto.reset()


def test_canary_encrypted_at_rest_with_real_workers(api, cluster, workers, dist_env):
    canary = f"INPUT-CANARY-{uuid.uuid4().hex}"
    assert api.get("/health").json()["mode"] == "distributed"
    assert api.post("/workflows", json=llm_spec()).status_code == 201
    r = api.post("/workflows/secret-flow/runs", json={"input": {"user_input": f"the secret is {canary}"}})
    assert r.status_code == 202, r.text
    record = wait_run(api, r.json()["run_id"], timeout=90)
    assert record["status"] == "succeeded", (record, workers.log("driver")[-3000:])
    assert canary in record["input"]["user_input"] and ANSWER in record["state"]["text_result"]
    trace = api.get(f"/runs/{record['run_id']}/trace").json()
    writer = next(s for s in trace["steps"] if s["node_id"] == "writer")
    assert canary in json.dumps(writer["input"]) and ANSWER in json.dumps(writer["output"])

    dump = subprocess.run(["pg_dump", "--no-owner", dist_env["DATABASE_URL"]], capture_output=True, text=True,
                          timeout=120)
    assert dump.returncode == 0, dump.stderr
    assert "COPY" in dump.stdout and "checkpoint_blobs" in dump.stdout  # the workers' checkpointer tables too
    assert f'"kid": "{kid_of(KEY)}"' in dump.stdout
    import psycopg

    with psycopg.connect(dist_env["DATABASE_URL"]) as conn:  # the driver did write a checkpoint, sealed
        sealed = conn.execute("SELECT count(*) FROM checkpoint_blobs WHERE thread_id = %s AND type LIKE %s",
                              (record["run_id"], f"%+af1.{kid_of(KEY)}")).fetchone()[0]
    assert sealed > 0
    leaks = [line[:200] for line in dump.stdout.splitlines() if canary in line or ANSWER in line]
    assert not leaks, leaks
