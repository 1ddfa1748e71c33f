"""MCP tools and OpenTelemetry on real workers (Celery, Redis, Postgres).

One run started through the API: a `tool` node (on the agentflow.api queue) calls an MCP
server over stdio, then an `llm` node (agentflow.llm) lets the model call another tool.
The OTLP receiver started here gets one trace: `agentflow.submit` from the API (this
process), `agentflow.run` from the driver, and step spans from the node workers, each
parented on the run span (the tool call on its llm step) across the processes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.api.support import wait_run
from tests.distributed.conftest import api_client, dist_env, module_server, start_workers, workers  # noqa: F401
from tests.servers.openai_server import OpenAIServer
from tests.servers.otlp_receiver import OTLPReceiver

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(240)]
SERVER = str(Path(__file__).resolve().parent.parent / "servers" / "mcp_tools.py")
API_KEY = "sk-dist-otel-canary-0000"
TOKEN = "dist-mcp-secret-0123456789"

SPEC = {
    "id": "mcp-dist", "name": "MCP on workers", "start_node": "input",
    "nodes": [
        {"id": "input", "type": "input"},
        {"id": "adder", "type": "tool", "source": "tools",
         "config": {"tool": "add", "arguments": {"a": "{metadata.a}", "b": 10}, "output_key": "sum"}},
        {"id": "agent", "type": "llm", "source": "gpt",
         "config": {"prompt": 'Say it.\ntool: env_value {"name": "SERVER_TOKEN"}\ntool: echo {"text": "{user_input}"}',
                    "tools": ["tools"]}},
        {"id": "final", "type": "aggregator", "config": {"fields": ["sum", "text_result"]}},
    ],
    "edges": [{"from": "input", "to": "adder"}, {"from": "adder", "to": "agent"}, {"from": "agent", "to": "final"}],
    "sources": [
        {"id": "gpt", "kind": "llm", "model": "gpt-4o-mini", "api_key_env": "OPENAI_API_KEY",
         "base_url_env": "OPENAI_BASE_URL"},
        {"id": "tools", "kind": "mcp", "transport": "stdio", "command": sys.executable, "args": [SERVER],
         "env": {"SERVER_TOKEN": "AF_DIST_MCP_TOKEN"}},
    ],
}


llm_server = module_server(OpenAIServer)
otlp_receiver = module_server(OTLPReceiver)


@pytest.fixture(scope="module")
def services(dist_env, workers, llm_server, otlp_receiver):  # noqa: F811
    llm_server.set_usage(9, 4)
    start_workers(dist_env, workers, {"driver": "runs", "llm": "agentflow.llm", "misc": "agentflow.api"},
                  concurrency=1, env={"OPENAI_API_KEY": API_KEY, "OPENAI_BASE_URL": llm_server.base_url,
                                      "AGENTFLOW_MCP_STDIO_COMMANDS": sys.executable, "AF_DIST_MCP_TOKEN": TOKEN,
                                      "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_receiver.url,
                                      "OTEL_BSP_SCHEDULE_DELAY": "100"})
    return llm_server, otlp_receiver


@pytest.fixture
def api(services, dist_env, monkeypatch):  # noqa: F811
    from agentflow.runs import telemetry

    telemetry.reset()  # the API's tracer, built with this module's endpoint
    with api_client(dist_env, monkeypatch, ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_BSP_SCHEDULE_DELAY")) as client:
        yield client
    telemetry.reset()


def test_tools_on_workers_in_one_trace_across_processes(api, services, workers):  # noqa: F811
    llm, otlp = services
    assert api.post("/workflows", json=SPEC).status_code == 201
    r = api.post("/workflows/mcp-dist/runs", json={"input": {"user_input": "over", "metadata": {"a": 5}}})
    assert r.status_code == 202, r.text
    run_id = r.json()["run_id"]
    run = wait_run(api, run_id, timeout=120)
    assert run["status"] == "succeeded", (run.get("error"), workers.log("misc")[-3000:], workers.log("llm")[-3000:])
    assert run["state"]["sum"] == {"result": 15}
    # the server got the mapped secret and the model saw it; the stored state has it scrubbed
    assert run["state"]["text_result"] == "Tools said: *** | echo: over"
    steps = {s["node_id"]: s for s in run["steps"]}
    assert steps["adder"]["queue"] == "agentflow.api" and steps["adder"]["worker"].startswith("misc@")
    assert steps["agent.tool:echo"]["worker"].startswith("llm@")
    assert steps["agent.tool:env_value"]["node_type"] == "tool_call"

    from agentflow.runs import telemetry

    telemetry.flush()  # the API's own span
    names = {"agentflow.submit", "agentflow.run", "agentflow.step input", "agentflow.step adder",
             "agentflow.step agent", "agentflow.step agent.tool:env_value", "agentflow.step agent.tool:echo",
             "agentflow.step final"}
    spans = otlp.wait_for(lambda ss: names <= {s.name for s in ss}, timeout=30)
    assert len({s.trace_id for s in spans}) == 1
    got = {s.name: s for s in spans}
    assert len(spans) == len(got) == len(names)  # one span each: the run span is not repeated
    root = got["agentflow.run"]
    assert root.parent_span_id == "" and root.attributes["agentflow.run.id"] == run_id
    assert got["agentflow.submit"].parent_span_id == root.span_id
    # the run waited for its remote steps over several advances: its span covers them all,
    # from its first advance, not only the last one (which ended it)
    steps_ = [s for s in spans if s.name.startswith("agentflow.step")]
    assert root.start_ns <= min(s.start_ns for s in steps_) and root.end_ns >= max(s.end_ns for s in steps_)
    for node in ("input", "adder", "agent", "final"):
        assert got[f"agentflow.step {node}"].parent_span_id == root.span_id, node
    for tool in ("env_value", "echo"):
        assert got[f"agentflow.step agent.tool:{tool}"].parent_span_id == got["agentflow.step agent"].span_id
    # they came from different processes: API (here), driver, the api-queue and llm workers
    pids = {name: s.resource["process.pid"] for name, s in got.items()}
    import os

    assert pids["agentflow.submit"] == os.getpid()
    assert len({pids["agentflow.submit"], pids["agentflow.run"], pids["agentflow.step adder"],
                pids["agentflow.step agent"]}) == 4
    assert pids["agentflow.step input"] == pids["agentflow.run"]  # the driver runs its own nodes
    agent = got["agentflow.step agent"]
    assert agent.attributes["gen_ai.request.model"] == "gpt-4o-mini"
    assert agent.attributes["gen_ai.usage.input_tokens"] == 27 and agent.attributes["gen_ai.usage.output_tokens"] == 12
    text = repr([(s.name, s.attributes, s.status_message) for s in spans])
    assert API_KEY not in text and TOKEN not in text
