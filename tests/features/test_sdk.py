"""The Python SDK (agentflow.client) against a real `agentflow serve` (embedded mode)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from agentflow.client import (AgentFlow, APIError, AsyncAgentFlow, EndEvent, NotFound, RunFailed, StepEvent, TokenEvent,
                              ValidationFailed)
from agentflow.graph.spec import WorkflowSpec
from tests.helpers import rules_spec, run_coroutine
from tests.servers.openai_server import OpenAIServer

KEY = "sk-sdk-test-0123456789"


def llm_spec(**over) -> dict:
    spec = {
        "id": "sdk-demo", "name": "SDK demo", "start_node": "input",
        "nodes": [
            {"id": "input", "type": "input"},
            {"id": "writer", "type": "llm", "source": "gpt",
             "config": {"prompt": "Tell a story about {user_input} in many words", "max_tokens": 60}},
            {"id": "final", "type": "aggregator", "config": {"fields": ["text_result"]}},
        ],
        "edges": [{"from": "input", "to": "writer"}, {"from": "writer", "to": "final"}],
        "sources": [{"id": "gpt", "kind": "llm", "provider": "openai", "model": "gpt-4o-mini",
                     "api_key_env": "OPENAI_API_KEY", "base_url_env": "OPENAI_BASE_URL", "max_retries": 0}],
    }
    spec.update(over)
    return spec


@pytest.fixture(scope="module")
def llm():
    with OpenAIServer(stream_delay=0.03) as srv:
        yield srv


@pytest.fixture(scope="module")
def server(serve_factory, llm):
    """One `agentflow serve` for the module (starting one takes a few seconds)."""
    return serve_factory(OPENAI_API_KEY=KEY, OPENAI_BASE_URL=llm.base_url)


@pytest.fixture
def openai_server(llm):
    """The module's OpenAI server, with its faults and delay reset for each test."""
    llm.reset()
    llm.delay = 0
    yield llm
    llm.reset()
    llm.delay = 0


def test_sdk_save_execute_stream_cancel(server, openai_server):
    with AgentFlow(server.url) as client:
        assert client.health()["mode"] == "embedded"

        # save (a WorkflowSpec model or a dict), list every page, versions, diff, rollback
        saved = client.workflows.save(WorkflowSpec.model_validate(llm_spec()))
        assert (saved.id, saved.version) == ("sdk-demo", 1)
        v2 = llm_spec(name="SDK demo v2")
        assert client.workflows.save(v2).version == 2
        for i in range(3):
            client.workflows.save(rules_spec(id=f"rules-{i}"))
        assert {w.id for w in client.workflows.list(page_size=2)} == {"sdk-demo", "rules-0", "rules-1", "rules-2"}
        assert [v.version for v in client.workflows.versions("sdk-demo")] == [2, 1]
        diff = client.workflows.diff("sdk-demo", 1, 2)
        assert diff.top == ["name"] and diff.from_ == 1 and diff.to == 2 and diff.nodes.changed == []
        assert client.workflows.rollback("sdk-demo", 1).version == 3
        assert client.workflows.get("sdk-demo").name == "SDK demo"

        # errors carry the API's problem list
        with pytest.raises(ValidationFailed) as bad:
            client.workflows.save({**llm_spec(), "start_node": "ghost"})
        assert bad.value.status == 422 and any(e["path"] == "start_node" for e in bad.value.errors)
        with pytest.raises(NotFound):
            client.workflows.get("ghost")
        assert client.workflows.validate({**llm_spec(), "start_node": "ghost"}).valid is False

        # execute: submit, wait, the final state
        state = client.execute("sdk-demo", "dragons", timeout=30)
        assert state["text_result"].startswith("Answer: Tell a story about dragons")
        assert state["final_output"] == {"text_result": state["text_result"]}

        # stream: typed events, tokens arrive while the LLM step runs
        run = client.runs.submit("sdk-demo", {"user_input": "a very long tale of robots"}, stream=True)
        events = list(run.stream(timeout=30))
        assert isinstance(events[-1], EndEvent) and events[-1].status == "succeeded"
        tokens = [e for e in events if isinstance(e, TokenEvent)]
        assert len(tokens) > 1 and {t.node_id for t in tokens} == {"writer"}
        text = events[-1].state["text_result"]
        assert "".join(t.delta for t in tokens).strip() == text.strip()
        kinds = [(e.kind, getattr(e, "node_id", None), getattr(e, "status", None)) for e in events]
        writer_done = kinds.index(("step", "writer", "succeeded"))
        assert sum(1 for k in kinds[:writer_done] if k[0] == "token") == len(tokens)  # all before the step ended
        assert all(isinstance(e, (StepEvent, TokenEvent, EndEvent)) for e in events)
        trace = run.trace()
        assert [s.node_id for s in trace.steps] == ["input", "writer", "final"]
        assert trace.steps[1].output["text_result"] == text

        # cancel a run while its model call hangs
        openai_server.delay = 1.0
        slow = client.runs.submit("sdk-demo", "slow")
        deadline = time.monotonic() + 10
        while slow.status() != "running" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert slow.cancel() == "cancelled"
        record = slow.wait(timeout=10)
        assert record.status == "cancelled"
        with pytest.raises(RunFailed) as failed:
            slow.result(timeout=5)
        assert failed.value.status == "cancelled"
        openai_server.delay = 0

        # a failing run raises RunFailed with the run's error
        openai_server.fail_next(1, status=400)
        with pytest.raises(RunFailed) as failed:
            client.execute("sdk-demo", "boom", timeout=30)
        assert failed.value.status == "failed" and "writer" in failed.value.error

        # re-run through the SDK
        again = run.rerun("final", {"text_result": "edited"})
        assert again.result(timeout=30)["final_output"] == {"text_result": "edited"}


def test_async_client(server, openai_server):
    async def main():
        async with AsyncAgentFlow(server.url) as client:
            await client.workflows.save(llm_spec(id="sdk-async"))
            assert "sdk-async" in [w.id async for w in client.workflows.list(page_size=1)]
            state = await client.execute("sdk-async", "owls", timeout=30)
            assert "owls" in state["text_result"]
            run = await client.runs.submit("sdk-async", "cats", stream=True)
            events = [e async for e in run.stream(timeout=30)]
            assert sum(isinstance(e, TokenEvent) for e in events) > 1 and events[-1].status == "succeeded"
            assert len((await run.trace()).steps) == 3
            with pytest.raises(NotFound):
                await client.runs.get("ghost")
            # the endpoints are the sync client's (sdk/resources.py), awaited
            assert [v.version for v in await client.workflows.versions("sdk-async")] == [1]
            assert (await client.workflows.validate({**llm_spec(), "start_node": "ghost"})).valid is False
            with pytest.raises(ValidationFailed):
                await client.workflows.save({**llm_spec(), "start_node": "ghost"})
            assert await run.status() == "succeeded" and (await client.runs.get(run.id)).status == "succeeded"
            again = await run.rerun("final", {"text_result": "edited"})
            assert (await again.result(timeout=30))["final_output"] == {"text_result": "edited"}
            assert {r.run_id async for r in client.runs.list(workflow_id="sdk-async", page_size=1)} >= {run.id, again.id}
            assert await client.webhooks.list() == [] and await client.hooks.list() == []
            hook = await client.hooks.create("sdk-async", "SDK_TEST_HOOK_KEY")
            webhook = await client.webhooks.create("https://hooks.example.test/af", ["run.failed"],
                                                   workflow_id="sdk-async")
            assert (await client.hooks.get(hook.id)).workflow_id == "sdk-async"
            assert [w.id for w in await client.webhooks.list()] == [webhook.id]
            assert (await client.webhooks.get(webhook.id)).events == ["run.failed"]
            assert await client.webhooks.deliveries(webhook.id) == []
            await client.hooks.delete(hook.id)
            await client.webhooks.delete(webhook.id)
            assert await client.webhooks.list() == [] and await client.hooks.list() == []
            with pytest.raises(NotFound):
                await client.hooks.get(hook.id)
            assert (await client.health())["mode"] == "embedded"

    run_coroutine(main)


def test_cli_run_stream_prints_tokens(tmp_path, openai_server, af_home):
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(llm_spec()))
    env = dict(__import__("os").environ, OPENAI_API_KEY=KEY, OPENAI_BASE_URL=openai_server.base_url)
    out = subprocess.run([sys.executable, "-m", "agentflow.cli", "run", str(path), "--input", "penguins", "--stream"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    state = json.loads(out.stdout)
    assert state["text_result"].startswith("Answer: Tell a story about penguins")
    # the answer's words were printed on stderr as they streamed, between the step lines
    err = out.stderr
    assert "> writer (llm)" in err and "ok writer" in err
    streamed = err.split("> writer (llm) ...", 1)[1].split("ok writer", 1)[0]
    assert streamed.strip() == state["text_result"].strip()
    assert openai_server.calls[-1].json["stream"] is True


HUMAN = {"id": "sdk-ask", "name": "Ask", "start_node": "ask", "edges": [{"from": "ask", "to": "done"}],
         "nodes": [{"id": "ask", "type": "human", "config": {"prompt": "Ship {user_input}?", "choices": ["yes", "no"]}},
                   {"id": "done", "type": "aggregator", "config": {"fields": ["approval"]}}]}


def test_sdk_and_cli_answer_a_waiting_run(server):
    with AgentFlow(server.url) as client:
        client.workflows.save(HUMAN)
        run = client.runs.submit("sdk-ask", "order 9")
        record = run.wait(30, until=("waiting",))
        assert record.status == "waiting"
        assert [w.model_dump() for w in record.waiting_for] == [{"node": "ask", "prompt": "Ship order 9?",
                                                                 "choices": ["yes", "no"]}]
        with pytest.raises(APIError) as info:
            client.resume(run.id, "ask", "maybe")
        assert info.value.status == 422
        assert client.resume(run.id, "ask", "yes", {"why": "paid"})["status"] == "resumed"
        final = run.result(30)
        assert final["approval"]["choice"] == "yes" and final["approval"]["values"] == {"why": "paid"}
        with pytest.raises(APIError) as info:
            run.resume("ask", "no")
        assert info.value.status == 409

        # the CLI answers through the same API
        second = client.runs.submit("sdk-ask", "order 10")
        assert second.wait(30, until=("waiting",)).status == "waiting"
        out = subprocess.run([sys.executable, "-m", "agentflow.cli", "resume", second.id, "--node", "ask",
                              "--choice", "no", "--url", server.url], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert second.result(30)["approval"]["choice"] == "no"
        bad = subprocess.run([sys.executable, "-m", "agentflow.cli", "resume", second.id, "--node", "ask",
                              "--choice", "no", "--url", server.url], capture_output=True, text=True, timeout=60)
        assert bad.returncode == 1 and "not waiting" in bad.stderr


def test_cli_run_then_resume_without_a_server(tmp_path, af_home):
    path = tmp_path / "ask.json"
    path.write_text(json.dumps(HUMAN))
    env = {**__import__("os").environ, "AGENTFLOW_HOME": str(af_home), "AGENTFLOW_PORT": "9"}  # nothing listens
    out = subprocess.run([sys.executable, "-m", "agentflow.cli", "run", str(path), "--input", "box"],
                         capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    waiting = json.loads(out.stdout)
    assert waiting["status"] == "waiting" and "agentflow resume" in out.stderr
    done = subprocess.run([sys.executable, "-m", "agentflow.cli", "resume", waiting["run_id"], "--node", "ask",
                           "--choice", "yes"], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["approval"]["choice"] == "yes"
