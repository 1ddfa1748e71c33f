"""MCP client (contract section 8): mcp sources over stdio and streamable HTTP against a
real MCP server started by the tests (tests/servers/mcp_tools.py, the SDK's MCPServer),
the `tool` node, and an `llm` node calling tools through the test OpenAI server's
tool-call replies: each tool call a step of its own, bounded, charged to the queue,
its secrets named by environment variables and never stored."""

from __future__ import annotations

import json
import sys

import pytest

from agentflow.graph.nodes import make_node
from agentflow.graph.runtime import RunContext
from agentflow.graph.step import StepFailed, run_step
from agentflow.graph.validate import parse_valid, validate
from agentflow.ratelimit.factory import memory_limiter
from agentflow.runs.embedded import EmbeddedExecutor
from agentflow.store.db import migrate, session_factory
from agentflow.store.runs import RunStore
from agentflow.store.trace import TraceStore
from tests.servers.mcp_tools import MCPHTTPServer

SERVER_SCRIPT = "tests/servers/mcp_tools.py"
TOKEN = "mcp-secret-token-0123456789"


def stdio_source(**over) -> dict:
    return {"id": "tools", "kind": "mcp", "transport": "stdio", "command": sys.executable,
            "args": [SERVER_SCRIPT], **over}


def tool_spec(source: dict, tool: str, arguments: dict, **node) -> dict:
    return {"id": "mcp-tool", "name": "MCP tool", "start_node": "input",
            "nodes": [{"id": "input", "type": "input"},
                      {"id": "call", "type": "tool", "source": source["id"],
                       "config": {"tool": tool, "arguments": arguments}, **node},
                      {"id": "final", "type": "aggregator", "config": {"fields": ["tool_result"]}}],
            "edges": [{"from": "input", "to": "call"}, {"from": "call", "to": "final"}],
            "sources": [source]}


def agent_spec(prompt: str, max_tool_calls: int = 5, queue: dict | None = None) -> dict:
    spec = {"id": "mcp-agent", "name": "MCP agent", "start_node": "input",
            "nodes": [{"id": "input", "type": "input"},
                      {"id": "agent", "type": "llm", "source": "gpt",
                       "config": {"prompt": prompt, "tools": ["tools"], "max_tool_calls": max_tool_calls}}],
            "edges": [{"from": "input", "to": "agent"}],
            "sources": [{"id": "gpt", "kind": "llm", "model": "gpt-4o-mini", "api_key_env": "OPENAI_API_KEY",
                         "base_url_env": "OPENAI_BASE_URL"},
                        stdio_source()]}
    if queue:
        spec["queues"] = [queue]
        spec["nodes"][1]["queue"] = queue["id"]
    return spec


@pytest.fixture
def executor(af_home, monkeypatch, reset_resilience):
    monkeypatch.setenv("AGENTFLOW_MCP_STDIO_COMMANDS", sys.executable)
    from agentflow.settings import get_settings

    get_settings.cache_clear()
    url = f"sqlite:///{af_home}/runs.db"
    af_home.mkdir(parents=True, exist_ok=True)
    migrate(url)
    ex = EmbeddedExecutor(RunStore(session_factory(url)), limiter=memory_limiter())
    yield ex
    ex.shutdown()


def execute(executor, spec: dict, text: str = "hi", metadata: dict | None = None) -> dict:
    assert validate(spec) == [], validate(spec)
    run_id = executor.store.create(spec, {"user_input": text, "metadata": metadata or {}}, workflow_id=spec["id"])
    return executor.execute(run_id)


# ---------------------------------------------------------------- validation


def test_validator_checks_mcp_sources_and_tools():
    spec = agent_spec("x")
    spec["nodes"][1]["config"]["tools"] = ["gpt", "nope"]
    spec["nodes"].append({"id": "t", "type": "tool", "source": "gpt", "config": {"tool": "add"}})
    spec["edges"].append({"from": "agent", "to": "t"})
    spec["sources"].append({"id": "bad", "kind": "mcp", "transport": "http", "command": "x"})
    found = {(p.path, p.message) for p in validate(spec)}
    assert ("nodes[1].config.tools[0]", "source 'gpt' is of kind 'llm'; tools must name mcp sources") in found
    assert ("nodes[1].config.tools[1]", "unknown source 'nope'") in found
    assert any(p == "nodes[2].source" and "needs a 'mcp' source" in m for p, m in found)
    assert ("sources[2].url", "an mcp source with transport 'http' needs a url") in found
    assert ("sources[2].command", "command is for transport 'stdio'") in found
    # a tool node's argument templates are checked like every template
    bad = tool_spec(stdio_source(), "echo", {"text": "{metadata.x} {nowhere}"})
    assert [p.path for p in validate(bad)] == ["nodes[1].config.arguments.text"]


# ---------------------------------------------------------------- tool node


def test_tool_node_over_stdio_passes_mapped_secret_only(executor, monkeypatch):
    monkeypatch.setenv("AF_TEST_MCP_TOKEN", TOKEN)
    source = stdio_source(env={"SERVER_TOKEN": "AF_TEST_MCP_TOKEN"})
    record = execute(executor, tool_spec(source, "add", {"a": "{metadata.a}", "b": 3}), metadata={"a": 4})
    assert record["status"] == "succeeded", record
    assert record["state"]["tool_result"] == {"result": 7}  # a template that is one field keeps its type

    # the server sees the mapped variable under its own name, and nothing else of ours
    record = execute(executor, tool_spec(source, "env_value", {"name": "SERVER_TOKEN"}))
    assert record["status"] == "succeeded", record
    stored = json.dumps(record)
    assert TOKEN not in stored and "***" in stored  # the secret came back and was scrubbed
    record = execute(executor, tool_spec(source, "env_value", {"name": "AF_TEST_MCP_TOKEN"}))
    assert record["state"]["tool_result"] == {"result": ""}


def test_tool_node_over_http_with_bearer_from_env(executor, monkeypatch):
    monkeypatch.setenv("AF_TEST_MCP_AUTH", TOKEN)
    with MCPHTTPServer(token=TOKEN) as server:
        source = {"id": "remote", "kind": "mcp", "transport": "http", "url": server.url,
                  "auth_env": "AF_TEST_MCP_AUTH", "allow_private": True}
        record = execute(executor, tool_spec(source, "echo", {"text": "{user_input}"}), text="ping")
        assert record["status"] == "succeeded", record
        assert record["state"]["tool_result"] == {"result": "echo: ping"}
        assert f"Bearer {TOKEN}" in server.authorizations

        # without the token the server refuses: the step fails, and says so without the secret
        source = {**source, "auth_env": None}
        record = execute(executor, tool_spec(source, "echo", {"text": "x"}))
        assert record["status"] == "failed"
        assert "mcp source 'remote'" in record["error"]
        # a loopback server is refused unless allow_private is set (SSRF guard)
        source = {**source, "allow_private": False}
        record = execute(executor, tool_spec(source, "echo", {"text": "x"}))
        assert record["status"] == "failed" and "loopback" in record["error"]
    assert TOKEN not in json.dumps(record)


def test_tool_error_and_disallowed_command_fail_the_step(executor, monkeypatch):
    record = execute(executor, tool_spec(stdio_source(), "fail", {"message": "boom"}))
    assert record["status"] == "failed"
    assert "tool 'fail' of mcp source 'tools' failed" in record["error"]

    # the server's own credentials cannot be handed to an MCP server
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:hunter2-secret@db/x")
    record = execute(executor, tool_spec(stdio_source(env={"DSN": "DATABASE_URL"}), "env_value", {"name": "DSN"}))
    assert record["status"] == "failed" and "server credential" in record["error"]
    assert "hunter2" not in json.dumps(record)

    monkeypatch.setenv("AGENTFLOW_MCP_STDIO_COMMANDS", "/usr/bin/true")
    from agentflow.settings import get_settings

    get_settings.cache_clear()
    record = execute(executor, tool_spec(stdio_source(), "add", {"a": 1, "b": 2}))
    assert record["status"] == "failed"
    assert "AGENTFLOW_MCP_STDIO_COMMANDS" in record["error"]


# ---------------------------------------------------------------- llm + tools


@pytest.fixture
def llm_env(monkeypatch, openai_server):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-mcp-test-000000")
    monkeypatch.setenv("OPENAI_BASE_URL", openai_server.base_url)
    return openai_server


def test_llm_calls_tools_each_a_step(executor, llm_env):
    llm_env.set_usage(10, 5)
    prompt = 'Work it out.\ntool: add {"a": 20, "b": 22}\ntool: echo {"text": "{user_input}"}'
    record = execute(executor, agent_spec(prompt), text="done")
    assert record["status"] == "succeeded", record
    assert record["state"]["text_result"] == "Tools said: 42 | echo: done"
    # steps are listed in the order they started: the llm step, then its tool calls
    assert [s["node_id"] for s in record["steps"]] == ["input", "agent", "agent.tool:add", "agent.tool:echo"]
    trace = TraceStore(executor.store.factory).trace(record["run_id"])
    calls = {s["node_id"]: s for s in trace["steps"] if s["node_type"] == "tool_call"}
    assert calls["agent.tool:add"]["status"] == "succeeded"
    assert calls["agent.tool:add"]["input"] == {"tool": "add", "arguments": {"a": 20, "b": 22}}
    assert calls["agent.tool:add"]["output"]["tool_result"] == {"result": 42}
    # a tool call's answer is not a state update: the replayed state has no trace of it
    assert "tool_result" not in trace["steps"][-1]["state_after"]

    # the model was offered the server's tools and got their answers back as tool messages
    chats = [c.json for c in llm_env.calls if c.path == "/v1/chat/completions"]
    assert len(chats) == 3
    assert {t["function"]["name"] for t in chats[0]["tools"]} == {"add", "echo", "env_value", "fail"}
    assert chats[2]["messages"][-1] == {"role": "tool", "tool_call_id": "call_2", "content": "echo: done"}
    # usage of all three model calls is added up
    assert record["state"]["tokens_used"] == 3 * (10 + 5)


def test_llm_tool_calls_are_bounded(executor, llm_env):
    prompt = "\n".join(['tool: add {"a": 1, "b": 1}'] * 4)
    record = execute(executor, agent_spec(prompt, max_tool_calls=2))
    assert record["status"] == "succeeded", record
    assert [s["node_id"] for s in record["steps"]].count("agent.tool:add") == 2
    chats = [c.json for c in llm_env.calls if c.path == "/v1/chat/completions"]
    assert len(chats) == 3
    assert "tools" not in chats[-1]  # the last turn offers no tools: the model must answer
    assert record["state"]["text_result"] == "Tools said: 2 | 2"


def test_tool_calls_count_against_the_queue(executor, llm_env):
    """A queue of 3 requests a minute, burst 3: the llm step takes one slot and its two
    tool calls the other two, so a second run's step cannot start within the wait."""
    queue = {"id": "q", "max_requests_per_minute": 3, "burst_size": 3}
    prompt = 'tool: add {"a": 1, "b": 2}\ntool: add {"a": 3, "b": 4}'
    record = execute(executor, agent_spec(prompt, queue=queue))
    assert record["status"] == "succeeded", record
    assert [s["node_id"] for s in record["steps"]].count("agent.tool:add") == 2

    parsed = parse_valid(agent_spec('tool: add {"a": 1, "b": 2}', queue=queue))
    impl = make_node(parsed.node("agent"), parsed)
    ctx = RunContext(run_id="adhoc", limiter=executor.limiter, max_limit_wait=0.5)
    with pytest.raises(StepFailed, match="gave no slot"):
        run_step(parsed, impl, {"user_input": "", "metadata": {}}, ctx)
