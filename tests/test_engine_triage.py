"""The reference spec end to end in embedded mode: test OpenAI server + real Postgres."""

import json
import logging
import subprocess
import sys

import pytest

from agentflow.graph.build import build_graph, compile_spec
from agentflow.graph.spec import WorkflowSpec
from agentflow.runs.embedded import EmbeddedExecutor
from agentflow.store.db import migrate, session_factory
from agentflow.store.runs import RunStore
from tests.helpers import TRIAGE_PATH, rules_spec, triage

CANARY = "sk-canary-7a6b5c4d3e2f1"


@pytest.fixture
def triage_env(monkeypatch, openai_server, shop_db_pg, af_home, reset_resilience):
    monkeypatch.setenv("OPENAI_API_KEY", CANARY)
    monkeypatch.setenv("OPENAI_BASE_URL", openai_server.base_url)
    monkeypatch.setenv("SHOP_DSN", shop_db_pg)
    return openai_server


@pytest.fixture
def executor(af_home):
    url = f"sqlite:///{af_home}/runs.db"
    af_home.mkdir(parents=True, exist_ok=True)
    migrate(url)
    store = RunStore(session_factory(url))
    ex = EmbeddedExecutor(store)
    yield ex
    ex.shutdown()


def run(executor, text, customer="alice"):
    spec = triage()
    run_id = executor.store.create(spec, {"user_input": text, "metadata": {"customer": customer}},
                                   workflow_id=spec["id"])
    return executor.execute(run_id)


def steps_by_node(record):
    out = {}
    for s in record["steps"]:
        out.setdefault(s["node_id"], []).append(s)
    return out


@pytest.mark.parametrize("text, intent, ran, skipped", [
    ("How do I reset my password?", "text", {"writer"}, {"painter"}),
    ("Please draw a picture of a cat", "image", {"painter"}, {"writer"}),
    ("Explain it and draw it too, both please", "both", {"writer", "painter"}, set()),
])
def test_triage_each_intent(triage_env, executor, text, intent, ran, skipped, caplog):
    caplog.set_level(logging.DEBUG)
    record = run(executor, text)
    assert record["status"] == "succeeded", record["error"]
    state = record["state"]
    assert state["intent"] == intent
    by_node = steps_by_node(record)
    assert set(by_node) == {"input", "router", "orders", "final"} | ran
    assert not (set(by_node) & skipped)
    assert len(by_node["final"]) == 1, "the join runs once, after every taken branch"
    assert all(s["status"] == "succeeded" for steps in by_node.values() for s in steps)
    final = state["final_output"]
    assert final["intent"] == intent
    assert [r["item"] for r in final["db_result"]] == ["keyboard", "mouse"]
    assert (final["text_result"] is not None) == ("writer" in ran)
    assert (final["image_result"] is not None) == ("painter" in ran)
    # tokens from parallel branches add up: router + writer (painter reports none)
    llm_calls = [c for c in triage_env.calls if c.path.endswith("/chat/completions")]
    assert len(llm_calls) == 1 + ("writer" in ran)
    assert state["tokens_used"] == sum(s["tokens"] for s in record["steps"]) > 0
    assert state["cost"] == pytest.approx(sum(s["cost"] for s in record["steps"]))
    # the API key was sent to the provider but appears nowhere we keep or print
    assert all(c.headers.get("authorization") == f"Bearer {CANARY}" for c in triage_env.calls)
    assert CANARY not in json.dumps(record)
    assert CANARY not in caplog.text


def test_failing_provider_fails_the_step_readably(triage_env, executor):
    triage_env.fail_next(100, status=500)
    spec = triage()
    spec["sources"][0]["max_retries"] = 1
    run_id = executor.store.create(spec, {"user_input": "hi", "metadata": {"customer": "bob"}})
    record = executor.execute(run_id)
    assert record["status"] == "failed"
    assert "router" in record["error"] and "500" in record["error"]
    failed = [s for s in record["steps"] if s["status"] == "failed"]
    assert [s["node_id"] for s in failed] == ["router"] and failed[0]["error"]
    assert CANARY not in json.dumps(record)


def test_cli_run_prints_final_state(triage_env, af_home):
    env = dict(__import__("os").environ)
    res = subprocess.run([sys.executable, "-m", "agentflow.cli", "run", str(TRIAGE_PATH), "--input",
                          "draw me a boat", "--metadata", json.dumps({"customer": "alice"}), "--progress"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    state = json.loads(res.stdout)
    assert state["intent"] == "image" and state["final_output"]["image_result"]
    assert "ok painter" in res.stderr and "ok final" in res.stderr
    assert CANARY not in res.stdout + res.stderr


def test_cli_run_reports_failure(monkeypatch, af_home, tmp_path):
    spec = triage()
    monkeypatch.delenv("SHOP_DSN", raising=False)
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9")  # nothing listens
    monkeypatch.setenv("OPENAI_API_KEY", CANARY)
    spec["sources"][0]["max_retries"] = 0
    f = tmp_path / "t.json"
    f.write_text(json.dumps(spec))
    res = subprocess.run([sys.executable, "-m", "agentflow.cli", "run", str(f), "--input", "x"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 1
    assert "failed" in res.stderr and CANARY not in res.stderr


def test_rules_workflow_needs_no_key(executor):
    spec = rules_spec()
    run_id = executor.store.create(spec, {"user_input": "hello", "metadata": {"tier": "paid"}})
    record = executor.execute(run_id)
    assert record["status"] == "succeeded"
    assert record["state"]["final_output"] == {"intent": "priority", "user_input": "hello"}


def test_compiled_graph_cache_by_content_hash():
    a = WorkflowSpec.model_validate(triage())
    b = WorkflowSpec.model_validate(json.loads(json.dumps(triage())))
    assert compile_spec(a) is compile_spec(b)
    changed = triage()
    changed["nodes"][2]["config"]["max_tokens"] = 100
    assert compile_spec(WorkflowSpec.model_validate(changed)) is not compile_spec(a)


def test_join_node_is_deferred():
    graph = build_graph(WorkflowSpec.model_validate(triage()))
    assert graph.nodes["final"].defer is True
    assert graph.nodes["writer"].defer is False


def test_cancelled_run_starts_no_new_step(executor):
    spec = rules_spec()
    run_id = executor.store.create(spec, {"user_input": "x"})
    executor.store.cancel(run_id)
    record = executor.execute(run_id)
    assert record["status"] == "cancelled" and record["steps"] == []
