"""A canary secret in the environment, used by real runs through the API, never shows
in captured logs (caplog, and a real server's own output), API answers (records, lists,
traces, the event stream), stored rows or step errors, even when the provider echoes it
back in an error or in its answer.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.security.conftest import secure_api
from tests.servers.agentflow_serve import AgentflowServe, server_env
from tests.servers.openai_server import OpenAIServer

ROOT = Path(__file__).resolve().parents[2]


def canary_value() -> str:
    return f"sk-canary-{uuid.uuid4().hex}"


def llm_spec(workflow_id: str = "canary") -> dict:
    return {
        "id": workflow_id, "name": "canary", "start_node": "input",
        "nodes": [
            {"id": "input", "type": "input"},
            {"id": "writer", "type": "llm", "source": "gpt",
             "config": {"prompt": "Answer briefly: {user_input}", "output_key": "text_result",
                        "max_tokens": 50, "max_retries": 0}},
        ],
        "edges": [{"from": "input", "to": "writer"}],
        "sources": [{"id": "gpt", "kind": "llm", "provider": "openai", "model": "gpt-4o-mini",
                     "api_key_env": "OPENAI_API_KEY", "base_url_env": "OPENAI_BASE_URL"}],
    }


def database_text(db_path: Path) -> str:
    """Every value of every row of every table, as text."""
    out = []
    with sqlite3.connect(db_path) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            for row in conn.execute(f'SELECT * FROM "{table}"'):
                out.append(f"{table}: {row!r}")
    return "\n".join(out)


class Exchanges:
    """Collects the text of every answer the API gave."""

    def __init__(self):
        self.texts: list[str] = []

    def add(self, response) -> "httpx.Response":
        self.texts.append(f"{response.request.method} {response.request.url} -> {response.status_code}\n"
                          f"{dict(response.headers)}\n{response.text}")
        return response

    def text(self) -> str:
        return "\n".join(self.texts)


def exercise(call, canary: str, server: OpenAIServer, wait) -> dict:
    """Runs that use the canary key: one the provider refuses with an error quoting the
    key, one whose answer quotes it. `call(method, url, **kw)` returns a response."""
    assert call("POST", "/workflows", json=llm_spec()).status_code == 201
    server.require_key = "the-right-key"  # the canary is refused, and quoted in the 401
    failed = call("POST", "/workflows/canary/runs", json={"input": {"user_input": "hello"}}).json()["run_id"]
    record = wait(failed)
    assert record["status"] == "failed", record
    assert "Incorrect API key provided" in json.dumps(record), record  # the error path ran

    server.require_key = canary
    server.responder = lambda req: f"the key is {canary} and again {canary}"
    ok = call("POST", "/workflows/canary/runs", json={"input": {"user_input": "hello"}}).json()["run_id"]
    record = wait(ok)
    assert record["status"] == "succeeded", record
    assert "the key is ***" in record["state"]["text_result"], record["state"]
    executed = call("POST", "/workflows/execute", json={"spec": llm_spec("inline"),
                                                        "initial_state": {"user_input": "hi"}}).json()
    assert executed["status"] == "succeeded", executed
    for url in (f"/runs/{failed}", f"/runs/{ok}", f"/runs/{ok}/events", f"/runs/{failed}/events",
                f"/runs/{ok}/trace", f"/runs/{failed}/trace", "/runs", "/workflows/canary/runs",
                "/workflows/canary", "/audit", "/metrics/summary"):
        call("GET", url)
    return {"failed": failed, "ok": ok}


def test_canary_in_process(tmp_path, monkeypatch, caplog):
    canary = canary_value()
    caplog.set_level(logging.DEBUG)
    exchanges = Exchanges()
    with OpenAIServer() as server:
        monkeypatch.setenv("OPENAI_API_KEY", canary)
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        with secure_api(tmp_path / "home", AGENTFLOW_RATE_TENANT_PER_MINUTE="0",
                        AGENTFLOW_RATE_IP_PER_MINUTE="0") as api:
            def call(method, url, **kw):
                return exchanges.add(api.call(method, url, **kw))

            exercise(call, canary, server, lambda run_id: api.wait_run(run_id))
            # the provider really got the key: this test is about it being used
            assert any(c.headers.get("authorization") == f"Bearer {canary}" for c in server.calls)
            # a log line or an exception that names it (a buggy library, say) is scrubbed too
            logging.getLogger("some.library").error("connecting with key %s", canary)
            try:
                raise RuntimeError(f"bad key {canary}")
            except RuntimeError:
                logging.getLogger("agentflow.test").exception("it failed")
    assert canary not in exchanges.text()
    assert "***" in exchanges.text()
    assert canary not in caplog.text
    assert "connecting with key ***" in caplog.text and "bad key ***" in caplog.text
    assert canary not in database_text(tmp_path / "home" / "agentflow.db")


def test_canary_with_a_real_server(tmp_path):
    """`agentflow serve` in a subprocess at DEBUG log level with the access log on: its
    own output is checked too, not only what pytest captures."""
    from agentflow.api.auth import issue_token
    from agentflow.settings import Settings

    canary = canary_value()
    home = tmp_path / "home"
    secret = "canary-server-secret-0123456789abcdef"
    with OpenAIServer() as server:
        env = server_env(home, AGENTFLOW_AUTH="required", AGENTFLOW_JWT_SECRET=secret, AGENTFLOW_LOG_LEVEL="DEBUG",
                         OPENAI_API_KEY=canary, OPENAI_BASE_URL=server.base_url)
        with AgentflowServe(env, tmp_path / "serve.log", "--log-level", "debug", "--access-log") as served:
            with pytest.MonkeyPatch.context() as mp:
                mp.setenv("AGENTFLOW_JWT_SECRET", secret)
                mp.setenv("AGENTFLOW_HOME", str(home))
                token = issue_token("acme", "admin", 600, "canary-test", settings=Settings())
            exchanges = Exchanges()
            with httpx.Client(base_url=served.url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
                def call(method, url, **kw):
                    return exchanges.add(http.request(method, url, **kw))

                exercise(call, canary, server, lambda run_id: wait_ended(call, run_id))
    output = served.log()
    assert "GET /runs/" in output  # the access log and debug logs were on
    assert canary not in output, [line for line in output.splitlines() if canary in line][:5]
    assert canary not in exchanges.text()
    assert secret not in output and token not in output
    assert canary not in database_text(home / "agentflow.db")


def wait_ended(call, run_id: str, timeout: float = 30) -> dict:
    """Poll GET /runs/{id} through `call` until the run has ended."""
    deadline = time.monotonic() + timeout
    while True:
        record = call("GET", f"/runs/{run_id}").json()
        if record["status"] in ("succeeded", "failed", "cancelled"):
            return record
        assert time.monotonic() < deadline, record
        time.sleep(0.1)


def test_workflows_may_not_read_the_servers_own_credentials(make_api, monkeypatch):
    """A spec names variables; naming the server's JWT secret or database URL (e.g. as an
    api source's auth_env, sent to a host of the spec's choosing) is refused."""
    api = make_api(AGENTFLOW_RATE_TENANT_PER_MINUTE="0", AGENTFLOW_RATE_IP_PER_MINUTE="0")
    monkeypatch.setenv("DATABASE_URL", "postgresql://app:hunter2-db-password@db:5432/agentflow")
    for env_name in ("AGENTFLOW_JWT_SECRET", "DATABASE_URL", "REDIS_URL"):
        spec = {"id": "steal", "name": "steal", "start_node": "input",
                "nodes": [{"id": "input", "type": "input"},
                          {"id": "call", "type": "api", "source": "evil",
                           "config": {"method": "GET", "path": "/x", "output_key": "api_result"}}],
                "edges": [{"from": "input", "to": "call"}],
                "sources": [{"id": "evil", "kind": "api", "base_url": "https://93.184.216.34", "auth_env": env_name}]}
        result = api.call("POST", "/workflows/execute", json={"spec": spec, "initial_state": {"user_input": "x"}}).json()
        assert result["status"] == "failed", result
        assert "workflows may not read it" in json.dumps(result), result
    monkeypatch.setenv("AGENTFLOW_SECRET_ENV_ALLOW", "SHOP_*,OPENAI_*")
    from agentflow.graph.secrets import SecretNotAllowed, check_env_name

    check_env_name("SHOP_TOKEN")
    with pytest.raises(SecretNotAllowed):
        check_env_name("HOME")
