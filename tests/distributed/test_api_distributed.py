"""The API in distributed mode: POST -> Celery workers -> poll, and Postgres outages seen by the API.

`agentflow serve` runs as a real process with REDIS_URL set (so it only stores and enqueues),
next to real worker processes per queue. The API reaches Postgres through a TCP proxy the
test can cut, to take the database away from the API alone and give it back.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from urllib.parse import urlsplit

import httpx
import pytest

from tests.helpers import triage

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(300)]


class TCPProxy:
    """Forwards 127.0.0.1:port to a target; `cut()` drops every connection and refuses new ones."""

    def __init__(self, target_host: str, target_port: int):
        self.target = (target_host, target_port)
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.sock.listen(64)
        self.up = threading.Event()
        self.up.set()
        self.conns: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            if not self.up.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src, dst):
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.close()
                except OSError:
                    pass

    def cut(self):
        self.up.clear()
        with self.lock:
            for c in self.conns:
                try:
                    c.shutdown(socket.SHUT_RDWR)
                    c.close()
                except OSError:
                    pass
            self.conns.clear()

    def restore(self):
        self.up.set()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def stack(dist_env, workers, tmp_path_factory):
    from tests.servers.openai_server import OpenAIServer

    import psycopg

    with psycopg.connect(dist_env["DATABASE_URL"], autocommit=True) as conn:
        conn.execute("CREATE TABLE orders (id serial PRIMARY KEY, customer text, item text, status text)")
        conn.execute("INSERT INTO orders (customer, item, status) VALUES ('alice','keyboard','shipped')")
    llm = OpenAIServer().start()
    extra = {"OPENAI_API_KEY": "sk-test-api-dist-1", "OPENAI_BASE_URL": llm.base_url,
             "SHOP_DSN": dist_env["DATABASE_URL"], "AGENTFLOW_JWT_SECRET": "test-secret-" + "x" * 24}
    dist_env.update(extra)
    workers.env.update(extra)
    workers.start("adriver", "runs,agentflow.control", concurrency=8, extra_env=None)
    workers.start("allm", "agentflow.llm", concurrency=2)
    workers.start("aimage", "agentflow.image", concurrency=1)
    workers.start("aio", "agentflow.db,agentflow.api", concurrency=1)
    workers.wait_ready(["adriver", "allm", "aimage", "aio"])

    pg = urlsplit(dist_env["DATABASE_URL"])
    proxy = TCPProxy(pg.hostname or "127.0.0.1", pg.port or 5432)
    api_db = dist_env["DATABASE_URL"].replace(f"{pg.hostname}:{pg.port or 5432}", f"127.0.0.1:{proxy.port}")
    port = free_port()
    log = open(tmp_path_factory.mktemp("api") / "api.log", "wb")
    api = subprocess.Popen([sys.executable, "-m", "agentflow.cli", "serve", "--port", str(port)],
                           env=dict(dist_env, DATABASE_URL=api_db), stdout=log, stderr=subprocess.STDOUT,
                           start_new_session=True)
    token = subprocess.run([sys.executable, "-m", "agentflow.cli", "token", "create", "--tenant", "default",
                            "--role", "admin", "--ttl", "3600"], env=dist_env, capture_output=True, text=True,
                           check=True).stdout.strip()
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {token}"},
                          timeout=30)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if client.get("/health").status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.3)
    else:
        raise RuntimeError("API did not start")
    yield client, proxy, llm
    client.close()
    api.terminate()
    api.wait(timeout=20)
    llm.stop()


def wait_run(client, run_id, timeout=90):
    deadline = time.time() + timeout
    while time.time() < deadline:
        r = client.get(f"/runs/{run_id}")
        if r.status_code == 200 and r.json()["status"] in ("succeeded", "failed", "cancelled"):
            return r.json()
        time.sleep(0.3)
    raise AssertionError(f"run {run_id} did not end")


def test_triage_through_the_api_runs_each_step_on_its_queue(stack):
    client, _, _ = stack
    assert client.post("/workflows", json=triage()).status_code == 201
    assert client.get("/health/ready").status_code == 200
    r = client.post("/workflows/support-triage/runs",
                    json={"input": {"user_input": "explain it and draw it, both", "metadata": {"customer": "alice"}}})
    assert r.status_code == 202 and r.json()["status"] == "queued"
    rec = wait_run(client, r.json()["run_id"])
    assert rec["status"] == "succeeded", rec["error"]
    steps = {s["node_id"]: s for s in rec["steps"]}
    assert steps["writer"]["queue"] == "agentflow.llm" and steps["writer"]["worker"].startswith("allm@")
    assert steps["painter"]["queue"] == "agentflow.image" and steps["painter"]["worker"].startswith("aimage@")
    assert steps["orders"]["queue"] == "agentflow.db" and steps["orders"]["worker"].startswith("aio@")
    assert steps["final"]["queue"] == "runs"
    assert rec["state"]["final_output"]["db_result"] == [{"id": 1, "item": "keyboard", "status": "shipped"}]


def test_database_outage_is_a_clear_503_and_no_accepted_run_is_lost(stack):
    client, proxy, _ = stack
    client.post("/workflows", json=triage())
    body = {"input": {"user_input": "how do I log in?", "metadata": {"customer": "alice"}}}
    accepted = [client.post("/workflows/support-triage/runs", json=body).json()["run_id"] for _ in range(3)]

    proxy.cut()
    try:
        r = client.post("/workflows/support-triage/runs", json=body)
        assert r.status_code == 503, r.text
        assert r.json()["detail"].startswith("database unavailable") and "errors" in r.json()
        assert client.get(f"/runs/{accepted[0]}").status_code == 503
        ready = client.get("/health/ready")
        assert ready.status_code == 503 and "database" in json.dumps(ready.json())
    finally:
        proxy.restore()

    deadline = time.time() + 30  # the pool's pre-ping replaces the dead connections
    while time.time() < deadline and client.get("/health/ready").status_code != 200:
        time.sleep(0.5)
    after = client.post("/workflows/support-triage/runs", json=body)
    assert after.status_code == 202, after.text
    for run_id in accepted + [after.json()["run_id"]]:
        assert wait_run(client, run_id)["status"] == "succeeded"
