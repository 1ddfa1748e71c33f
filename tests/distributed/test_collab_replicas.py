"""Two API replicas (`agentflow serve` with REDIS_URL and one Postgres database) share a
workflow's collaborative room through Redis pub/sub: clients of either replica converge,
and a replica that opens the room later loads what the other stored."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import anyio
import httpx
import pytest
from pycrdt import Map

from agentflow.api.collab_doc import read_spec, roots
from tests.collab.client import eventually, shared_doc
from tests.collab.conftest import SECRET, save, token
from tests.features.conftest import free_port
from tests.helpers import rules_spec, run_coroutine

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(180)]


def _serve(env: dict, log_path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    log = open(log_path, "wb")
    proc = subprocess.Popen([sys.executable, "-m", "agentflow.cli", "serve", "--port", str(port),
                             "--host", "127.0.0.1", "--log-level", "warning"],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"agentflow serve exited: {log_path.read_text(errors='replace')[-3000:]}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    pytest.fail(f"agentflow serve did not start: {log_path.read_text(errors='replace')[-3000:]}")


@pytest.fixture(scope="module")
def replicas(dist_env, tmp_path_factory):
    logs = tmp_path_factory.mktemp("replicas")
    env = dict(dist_env, AGENTFLOW_AUTH="required", AGENTFLOW_JWT_SECRET=SECRET, AGENTFLOW_LOAD_EXAMPLES="0")
    procs = []
    try:
        for i in range(2):
            procs.append(_serve(env, logs / f"api-{i}.log"))
        yield [url for _, url in procs]
    finally:
        for proc, _ in procs:
            proc.terminate()
        for proc, _ in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


def _add_node(doc, node_id: str) -> None:
    r = roots(doc)
    with doc.transaction():
        r["nodes"][node_id] = Map({"id": json.dumps(node_id), "type": json.dumps("aggregator"),
                                   "config": json.dumps({"fields": [node_id]})})
        r["order"].append(node_id)


def test_clients_of_two_replicas_edit_one_document(replicas):
    one, two = replicas
    save(one, rules_spec(id="shared"), token())

    async def main():
        async with shared_doc(one, "shared", token(subject="alice")) as (a, _), \
                shared_doc(two, "shared", token(subject="bob")) as (b, _):
            assert read_spec(a) == read_spec(b)
            roots(a)["meta"]["name"] = json.dumps("From replica one")
            _add_node(b, "from-two")
            for doc in (a, b):
                await eventually(lambda doc=doc: read_spec(doc)["name"] == "From replica one"
                                 and "from-two" in [n["id"] for n in read_spec(doc)["nodes"]], timeout=3)
            # many edits from both sides at once still converge
            for i in range(20):
                _add_node(a, f"a{i}")
                _add_node(b, f"b{i}")
            await eventually(lambda: read_spec(a) == read_spec(b) and len(read_spec(a)["nodes"]) == 3 + 1 + 40,
                             timeout=5)
            # an edit through the other replica arrives within a second (contract section 9)
            delays = []
            for i in range(20):
                start = anyio.current_time()
                roots(a)["meta"]["description"] = json.dumps(f"edit {i}")
                await eventually(lambda i=i: read_spec(b).get("description") == f"edit {i}", timeout=2,
                                 interval=0.002)
                delays.append(anyio.current_time() - start)
            delays.sort()
            print(f"replica to replica: median {delays[10] * 1000:.1f} ms, max {delays[-1] * 1000:.1f} ms")
            assert delays[-1] < 1.0, delays
            # a third client joining on either replica loads the same document
            async with shared_doc(two, "shared", token(subject="carol")) as (c, _):
                assert read_spec(c) == read_spec(a)

    run_coroutine(main)

    async def reopen():  # every client gone: each replica closed its room; the database has it all
        async with shared_doc(one, "shared", token(subject="dave")) as (d, _):
            spec = read_spec(d)
            assert spec["name"] == "From replica one" and len(spec["nodes"]) == 44

    run_coroutine(reopen)
