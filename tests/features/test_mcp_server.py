"""AgentFlow as an MCP server (contract section 8), answered by the SDK's own client:
`agentflow mcp` over stdio, and /mcp over streamable HTTP on a real `agentflow serve`
with the REST API's auth and tenancy (Bearer JWT; another tenant's workflows invisible;
a viewer may list but not start runs; a run that outlasts the bound answers its run id)."""

from __future__ import annotations

import os
import sys

import httpx
import pytest

from agentflow.api.auth import AuthConfig
from agentflow.settings import Settings
from tests.helpers import rules_spec, run_coroutine
from tests.servers.openai_server import OpenAIServer

SECRET = "mcp-server-test-secret-" + "x" * 24


def token(tenant: str, role: str = "editor") -> str:
    cfg = AuthConfig.from_settings(Settings(AGENTFLOW_JWT_SECRET=SECRET, AGENTFLOW_AUTH="required"))
    return cfg.issue(tenant=tenant, role=role, ttl_seconds=600, subject=f"{tenant}-{role}")


def slow_spec() -> dict:
    return {"id": "slow", "name": "Slow one", "description": "asks a slow model", "start_node": "input",
            "nodes": [{"id": "input", "type": "input"},
                      {"id": "ask", "type": "llm", "source": "gpt", "config": {"prompt": "{user_input}"}}],
            "edges": [{"from": "input", "to": "ask"}],
            "sources": [{"id": "gpt", "kind": "llm", "model": "gpt-4o-mini", "api_key_env": "OPENAI_API_KEY",
                         "base_url_env": "OPENAI_BASE_URL"}]}


async def over_http(url: str, bearer: str | None, call: tuple[str, dict] | None = None):
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared._httpx_utils import create_mcp_http_client

    headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
    async with create_mcp_http_client(headers=headers) as http:
        async with Client(streamable_http_client(url, http_client=http), cache=None) as client:
            tools = (await client.list_tools()).tools
            result = await client.call_tool(*call) if call else None
            return tools, result


def test_agentflow_mcp_over_stdio(tmp_path):
    from agentflow.graph.validate import parse_valid
    from agentflow.store.db import migrate, session_factory
    from agentflow.store.workflows import WorkflowStore

    url = f"sqlite:///{tmp_path / 'agentflow.db'}"
    migrate(url)
    workflows = WorkflowStore(session_factory(url))
    workflows.save("default", parse_valid(rules_spec()))
    workflows.save("other", parse_valid({**rules_spec(), "id": "not-yours"}))

    async def main():
        from mcp import Client, StdioServerParameters

        params = StdioServerParameters(command=sys.executable, args=["-m", "agentflow.cli", "mcp"],
                                       env={"AGENTFLOW_HOME": str(tmp_path), "PYTHONPATH": os.getcwd()})
        async with Client(params, cache=None) as client:
            tools = (await client.list_tools()).tools
            result = await client.call_tool("rules-demo", {"user_input": "hello", "metadata": {"tier": "paid"}})
            missing = await client.call_tool("not-yours", {"user_input": "x"})
            bad = await client.call_tool("rules-demo", {"user_input": 3})
            return tools, result, missing, bad

    tools, result, missing, bad = run_coroutine(main, timeout=120)
    assert [t.name for t in tools] == ["rules-demo"]  # the other tenant's workflow is not listed
    assert tools[0].input_schema["properties"]["user_input"] == {"type": "string", "description": "The run's user_input."}
    assert tools[0].input_schema["required"] == ["user_input"]
    assert not result.is_error, result
    assert result.structured_content["status"] == "succeeded"
    assert result.structured_content["final_output"] == {"intent": "priority", "user_input": "hello"}
    assert missing.is_error and "no workflow 'not-yours'" in missing.content[0].text
    assert bad.is_error and "user_input must be a string" in bad.content[0].text


@pytest.fixture(scope="module")
def served(serve_factory):
    with OpenAIServer(delay=3.0) as slow_llm:
        yield serve_factory(AGENTFLOW_AUTH="required", AGENTFLOW_JWT_SECRET=SECRET, OPENAI_API_KEY="sk-mcp-0000",
                            OPENAI_BASE_URL=slow_llm.base_url, AGENTFLOW_MCP_CALL_WAIT_S="1")


def test_mcp_over_http_with_the_apis_auth_and_tenancy(served):
    api = httpx.Client(base_url=served.url, timeout=30)
    acme, globex = token("acme"), token("globex")
    for spec, who in ((rules_spec(), acme), ({**rules_spec(), "id": "globex-only"}, globex)):
        r = api.post("/workflows", json=spec, headers={"Authorization": f"Bearer {who}"})
        assert r.status_code == 201, r.text

    tools, result = run_coroutine(lambda: over_http(served.url + "/mcp", acme,
                                                    ("rules-demo", {"user_input": "hi", "metadata": {}})))
    assert [t.name for t in tools] == ["rules-demo"]  # globex's workflow is invisible to acme
    assert result.structured_content["final_output"] == {"intent": "normal", "user_input": "hi"}
    run_id = result.structured_content["run_id"]
    assert api.get(f"/runs/{run_id}", headers={"Authorization": f"Bearer {acme}"}).json()["status"] == "succeeded"
    assert api.get(f"/runs/{run_id}", headers={"Authorization": f"Bearer {globex}"}).status_code == 404
    _, other = run_coroutine(lambda: over_http(served.url + "/mcp", globex, ("rules-demo", {"user_input": "x"})))
    assert other.is_error and "no workflow 'rules-demo'" in other.content[0].text

    # without a token, or with a bad one: the API's 401 (the SDK reports it as an error response)
    from mcp.shared.exceptions import MCPError

    for bearer in (None, "not-a-jwt", token("acme").replace(".", "x", 1)):
        with pytest.raises(BaseExceptionGroup) as failed:
            run_coroutine(lambda: over_http(served.url + "/mcp", bearer))
        assert failed.group_contains(MCPError), repr(failed.value)
    r = api.post("/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                 headers={"Accept": "application/json, text/event-stream"})
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")

    # a viewer may list the tools but not start a run
    tools, refused = run_coroutine(lambda: over_http(served.url + "/mcp", token("acme", "viewer"),
                                                     ("rules-demo", {"user_input": "x"})))
    assert [t.name for t in tools] == ["rules-demo"]
    assert refused.is_error and "needs editor" in refused.content[0].text


def test_mcp_call_answers_the_run_id_when_the_run_outlasts_the_bound(served):
    api = httpx.Client(base_url=served.url, timeout=30)
    acme = token("acme")
    assert api.post("/workflows", json=slow_spec(), headers={"Authorization": f"Bearer {acme}"}).status_code == 201
    _, result = run_coroutine(lambda: over_http(served.url + "/mcp", acme, ("slow", {"user_input": "take your time"})))
    assert not result.is_error
    assert result.structured_content["status"] in ("queued", "running")
    run_id = result.structured_content["run_id"]
    assert f"GET /runs/{run_id}" in result.content[0].text
    import time

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        run = api.get(f"/runs/{run_id}", headers={"Authorization": f"Bearer {acme}"}).json()
        if run["status"] == "succeeded":
            break
        time.sleep(0.2)
    assert run["status"] == "succeeded" and run["state"]["text_result"] == "Answer: take your time"
