"""OpenTelemetry (contract section 8), embedded: an OTLP receiver started here gets one
trace per run (root `agentflow.run`, `agentflow.step <node>` children, tool calls under
their llm step, GenAI attributes on model calls, the API's `agentflow.submit`), with no
secret in any attribute; and with the variable unset the SDK is never imported."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from agentflow.runs import telemetry
from tests.api.conftest import api_env, make_client  # noqa: F401  (fixtures)
from tests.servers.otlp_receiver import OTLPReceiver
from tests.test_mcp_client import agent_spec, execute, executor  # noqa: F401  (fixture)

API_KEY = "sk-otel-canary-0123456789"


@pytest.fixture
def otlp(monkeypatch):
    with OTLPReceiver() as receiver:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)
        monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
        from agentflow.settings import get_settings

        get_settings.cache_clear()
        telemetry.reset()
        yield receiver
        telemetry.reset()
        monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT")
        get_settings.cache_clear()


def by_name(spans) -> dict:
    return {s.name: s for s in spans}


def assert_no_secrets(spans, *secrets: str) -> None:
    text = json.dumps([[s.name, s.attributes, s.status_message] for s in spans])
    for secret in secrets:
        assert secret not in text


def test_embedded_run_exports_one_trace(otlp, executor, openai_server, monkeypatch):  # noqa: F811
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", openai_server.base_url)
    openai_server.set_usage(11, 7)
    record = execute(executor, agent_spec('tool: add {"a": 2, "b": 5}'), text="secret question 42")
    assert record["status"] == "succeeded", record
    telemetry.flush()
    spans = otlp.wait_for(lambda ss: any(s.name == "agentflow.run" for s in ss))
    assert len({s.trace_id for s in spans}) == 1  # one trace for the run
    got = by_name(spans)
    assert set(got) == {"agentflow.run", "agentflow.step input", "agentflow.step agent",
                        "agentflow.step agent.tool:add"}
    run = got["agentflow.run"]
    assert run.parent_span_id == "" and run.attributes["agentflow.run.id"] == record["run_id"]
    assert run.attributes["agentflow.run.status"] == "succeeded" and run.status_code == 1  # OK
    assert got["agentflow.step input"].parent_span_id == run.span_id
    agent = got["agentflow.step agent"]
    assert agent.parent_span_id == run.span_id
    assert got["agentflow.step agent.tool:add"].parent_span_id == agent.span_id
    assert got["agentflow.step agent.tool:add"].attributes["gen_ai.tool.name"] == "add"
    # GenAI semantic conventions: two model calls (the tool call, then the answer)
    assert agent.attributes["gen_ai.request.model"] == "gpt-4o-mini"
    assert agent.attributes["gen_ai.system"] == "openai" and agent.attributes["gen_ai.operation.name"] == "chat"
    assert agent.attributes["gen_ai.usage.input_tokens"] == 22
    assert agent.attributes["gen_ai.usage.output_tokens"] == 14
    assert agent.attributes["agentflow.step.tokens"] == 36
    assert_no_secrets(spans, API_KEY, "secret question", "Tools said")


def test_failed_step_span_says_why_without_the_secret(otlp, executor, openai_server, monkeypatch):  # noqa: F811
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", openai_server.base_url)
    openai_server.require_key = "another-key-0000"  # answers 401 echoing the key we sent
    record = execute(executor, agent_spec("hello"))
    assert record["status"] == "failed"
    telemetry.flush()
    spans = otlp.wait_for(lambda ss: any(s.name == "agentflow.run" for s in ss))
    got = by_name(spans)
    assert got["agentflow.step agent"].status_code == 2  # ERROR
    assert "401" in got["agentflow.step agent"].status_message
    assert got["agentflow.run"].status_code == 2
    assert_no_secrets(spans, API_KEY)


def test_api_run_joins_the_callers_trace(otlp, make_client):  # noqa: F811
    from tests.helpers import rules_spec

    client = make_client()
    assert client.post("/workflows", json=rules_spec()).status_code == 201
    caller_trace, caller_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    r = client.post("/workflows/rules-demo/runs", json={"input": {"user_input": "x"}},
                    headers={"traceparent": f"00-{caller_trace}-{caller_span}-01"})
    assert r.status_code == 202, r.text
    run_id = r.json()["run_id"]
    from tests.api.support import wait_run

    assert wait_run(client, run_id)["status"] == "succeeded"
    spans = otlp.wait_for(lambda ss: {"agentflow.run", "agentflow.submit", "agentflow.step final"}
                          <= {s.name for s in ss}, timeout=20)
    got = by_name(spans)
    assert {s.trace_id for s in spans} == {caller_trace}
    run = got["agentflow.run"]
    assert run.parent_span_id == caller_span and run.attributes["agentflow.run.id"] == run_id
    assert got["agentflow.submit"].parent_span_id == run.span_id  # the API's part, under the run
    for node in ("input", "route", "final"):
        assert got[f"agentflow.step {node}"].parent_span_id == run.span_id


def test_off_by_default_and_nothing_is_built(tmp_path):
    """A whole embedded run with OTEL_EXPORTER_OTLP_ENDPOINT unset builds no tracer and
    imports no exporter. (langsmith, under LangGraph, imports opentelemetry.sdk.trace by
    itself when the `otel` extra is installed, as it is here; without the extra nothing is.)"""
    script = """
import json, sys
from agentflow.runs.embedded import EmbeddedExecutor
from agentflow.store.db import migrate, session_factory
from agentflow.store.runs import RunStore
from tests.helpers import rules_spec
url = "sqlite:///%s/runs.db"
migrate(url)
ex = EmbeddedExecutor(RunStore(session_factory(url)))
spec = rules_spec()
record = ex.execute(ex.store.create(spec, {"user_input": "x"}, workflow_id=spec["id"]))
from agentflow.runs import telemetry
print(json.dumps({"status": record["status"], "state": sorted(telemetry._state),
                  "sdk": sorted(m for m in sys.modules if m.startswith(("opentelemetry.exporter",
                                                                         "opentelemetry.sdk.trace.export")))}))
""" % tmp_path
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("OTEL_")}
    env["AGENTFLOW_HOME"] = str(tmp_path)
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120,
                         cwd=str(__import__("pathlib").Path(__file__).resolve().parent.parent))
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"status": "succeeded", "state": [], "sdk": []}


def test_agentflow_run_exports_its_trace_before_exiting(otlp, tmp_path):
    """The CLI's run (with its progress observer) is traced too, and the spans still
    batched when the process ends are sent on the way out."""
    from tests.helpers import rules_spec

    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(rules_spec()))
    env = dict(__import__("os").environ, AGENTFLOW_HOME=str(tmp_path / "home"),
               OTEL_EXPORTER_OTLP_ENDPOINT=otlp.url, OTEL_BSP_SCHEDULE_DELAY="60000")
    out = subprocess.run([sys.executable, "-m", "agentflow.cli", "run", str(spec_path), "--input", "hi",
                          "--progress"], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    names = {s.name for s in otlp.wait_for(lambda ss: len(ss) >= 4, timeout=10)}
    assert names == {"agentflow.run", "agentflow.step input", "agentflow.step route", "agentflow.step final"}
