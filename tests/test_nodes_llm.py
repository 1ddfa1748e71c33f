"""llm, router (llm mode) and image nodes against the real OpenAI-compatible test server:
usage and cost, streaming, label checking, retries, Retry-After, breaker, secrets."""

from __future__ import annotations

import json
import logging
import time

import pytest

from agentflow.graph import resilience
from agentflow.graph.errors import CircuitOpenError, InvalidOutput, ProviderError
from agentflow.graph.runtime import RunContext
from agentflow.graph.state import initial_state
from tests.fixtures_servers import make_spec, node_of

pytestmark = pytest.mark.usefixtures("reset_resilience")

SOURCES = [
    {"id": "gpt", "kind": "llm", "model": "gpt-4o-mini", "api_key_env": "OPENAI_API_KEY",
     "base_url_env": "OPENAI_BASE_URL"},
    {"id": "dalle", "kind": "image", "model": "dall-e-3", "api_key_env": "OPENAI_API_KEY",
     "base_url_env": "OPENAI_BASE_URL"},
    {"id": "gimg", "kind": "image", "model": "gpt-image-1", "api_key_env": "OPENAI_API_KEY",
     "base_url_env": "OPENAI_BASE_URL"},
]
ROUTER = {"id": "router", "type": "router", "source": "gpt",
          "config": {"mode": "llm", "output_key": "intent", "labels": ["text", "image", "both"],
                     "prompt": "Classify the request.\n\n{user_input}"}}


def llm_node(**config):
    return {"id": "writer", "type": "llm", "source": "gpt",
            "config": {"prompt": "Reply to {metadata.name}: {user_input}", **config}}


@pytest.fixture
def ctx(openai_server):
    return RunContext(run_id="run-1", env={"OPENAI_API_KEY": "sk-test-000000",
                                           "OPENAI_BASE_URL": openai_server.base_url})


class Recorder:
    """A StepObserver keeping streamed tokens."""

    def __init__(self):
        self.tokens: list[tuple[str, str, str]] = []

    def token(self, run_id, node_id, delta):
        self.tokens.append((run_id, node_id, delta))


def test_llm_node_text_usage_and_cost(openai_server, ctx):
    impl = node_of(make_spec([llm_node(system="Be brief, {metadata.name}.", max_tokens=64, temperature=0.3)],
                             SOURCES))
    openai_server.set_usage(1000, 500)
    update = impl(initial_state("where is my order", {"name": "Ann"}), ctx)
    assert update["text_result"] == "Answer: Reply to Ann: where is my order"
    assert update["tokens_used"] == 1500
    assert update["cost"] == pytest.approx(1000 / 1000 * 0.00015 + 500 / 1000 * 0.0006)
    body = openai_server.calls[0].json
    assert body["messages"] == [{"role": "system", "content": "Be brief, Ann."},
                                {"role": "user", "content": "Reply to Ann: where is my order"}]
    assert body["max_tokens"] == 64 and body["temperature"] == 0.3 and not body.get("stream")


def test_llm_node_omits_unset_options(openai_server, ctx):
    node_of(make_spec([llm_node()], SOURCES))(initial_state("hi", {}), ctx)
    body = openai_server.calls[0].json
    assert "max_tokens" not in body and "temperature" not in body


def test_llm_node_streams_tokens_to_the_observer(openai_server, ctx):
    rec = Recorder()
    ctx.observer = rec
    impl = node_of(make_spec([llm_node(stream=True)], SOURCES))
    update = impl(initial_state("tell me about the weather today", {"name": "Bo"}), ctx)
    assert len(rec.tokens) > 1
    assert {(r, n) for r, n, _ in rec.tokens} == {("run-1", "writer")}
    assert "".join(d for _, _, d in rec.tokens) == update["text_result"]
    assert update["tokens_used"] > 0 and update["cost"] > 0  # usage from the final chunk
    assert openai_server.calls[0].json["stream"] is True


def test_stream_can_be_asked_by_the_run(openai_server, ctx):
    rec = Recorder()
    ctx.observer, ctx.extra = rec, {"stream": True}
    node_of(make_spec([llm_node()], SOURCES))(initial_state("one two three", {}), ctx)
    assert len(rec.tokens) > 1


@pytest.mark.parametrize("text,label", [
    ("Please draw me a cat", "image"),
    ("Write and draw both, please", "both"),
    ("What is my order status?", "text"),
])
def test_router_llm_picks_labels(openai_server, ctx, text, label):
    impl = node_of(make_spec([ROUTER], SOURCES))
    assert impl.calls_outside
    update = impl(initial_state(text), ctx)
    assert update["intent"] == label and update["tokens_used"] > 0 and update["cost"] > 0
    prompt = openai_server.calls[0].json["messages"][-1]["content"]
    assert prompt.endswith("Choose one of: text, image, both. Answer with the label only.")


@pytest.mark.parametrize("answer,label", [
    ('"Image."', "image"), ("  BOTH\n", "both"), ("Label: text", "text"), ("`image`", "image"),
])
def test_router_normalises_answers(openai_server, ctx, answer, label):
    openai_server.responder = lambda req: answer
    assert node_of(make_spec([ROUTER], SOURCES))(initial_state("x"), ctx)["intent"] == label


@pytest.mark.parametrize("answer", ["a video", "text or image", ""])
def test_router_answer_outside_labels_is_invalid_output(openai_server, ctx, answer):
    openai_server.responder = lambda req: answer
    with pytest.raises(InvalidOutput) as info:
        node_of(make_spec([ROUTER], SOURCES))(initial_state("x"), ctx)
    assert f"got the answer {answer!r}" in str(info.value)
    assert "'text', 'image', 'both'" in str(info.value)
    assert info.value.node_id == "router" and not info.value.retryable
    assert openai_server.call_count == 1


def test_image_node_single_and_cost(openai_server, ctx):
    node = {"id": "painter", "type": "image", "source": "dalle",
            "config": {"prompt": "A drawing of {user_input}", "size": "1792x1024", "quality": "hd"}}
    update = node_of(make_spec([node], SOURCES))(initial_state("a red bike"), ctx)
    assert update["image_result"]["url"].startswith(openai_server.url)
    assert update["image_result"]["revised_prompt"] == "A picture of: A drawing of a red bike"
    assert update["cost"] == pytest.approx(0.12) and "tokens_used" not in update
    body = openai_server.calls[0].json
    assert (body["model"], body["size"], body["n"], body["quality"]) == ("dall-e-3", "1792x1024", 1, "hd")


def test_image_node_many_b64_with_usage(openai_server, ctx):
    node = {"id": "painter", "type": "image", "source": "gimg",
            "config": {"prompt": "{user_input}", "n": 2, "output_key": "pics"}}
    update = node_of(make_spec([node], SOURCES))(initial_state("a cat"), ctx)
    assert isinstance(update["pics"], list) and len(update["pics"]) == 2
    assert all(p["b64_json"] for p in update["pics"])
    assert update["cost"] == pytest.approx(2 * 0.042) and update["tokens_used"] > 0


# ---------------------------------------------------------------- failures


def test_429_retry_after_is_honoured(openai_server, ctx):
    openai_server.fail_next(1, status=429, retry_after=1)
    update = node_of(make_spec([llm_node()], SOURCES))(initial_state("hi", {}), ctx)
    assert update["text_result"].startswith("Answer:")
    first, second = openai_server.calls
    assert second.time - first.time >= 0.95


def test_retry_exhaustion_is_readable(openai_server, ctx, monkeypatch):
    monkeypatch.setattr(resilience, "sleep", lambda s: None)
    openai_server.fail_next(10, status=503)
    impl = node_of(make_spec([llm_node(max_retries=2)], SOURCES))
    with pytest.raises(ProviderError) as info:
        impl(initial_state("hi", {}), ctx)
    assert str(info.value) == ("LLM source 'gpt' answered 503 Service Unavailable: injected failure (503) "
                               "(after 3 attempts)")
    assert info.value.status == 503 and info.value.node_id == "writer"
    assert openai_server.call_count == 3


def test_timeouts_are_retried_then_reported(openai_server, ctx, monkeypatch):
    monkeypatch.setattr(resilience, "sleep", lambda s: None)
    openai_server.delay = 1.0
    impl = node_of(make_spec([llm_node(timeout_seconds=0.2, max_retries=1)], SOURCES))
    with pytest.raises(ProviderError, match=r"did not answer within 0.2 s \(after 2 attempts\)"):
        impl(initial_state("hi", {}), ctx)
    assert openai_server.call_count == 2


def test_client_errors_are_not_retried(openai_server, ctx):
    openai_server.fail_next(5, status=400)
    with pytest.raises(ProviderError, match="400 Bad Request"):
        node_of(make_spec([llm_node()], SOURCES))(initial_state("hi", {}), ctx)
    assert openai_server.call_count == 1


def test_breaker_opens_and_closes(openai_server, ctx):
    resilience.configure_breaker("gpt", fail_max=3, reset_timeout=0.5)
    impl = node_of(make_spec([llm_node(max_retries=0)], SOURCES))
    state = initial_state("hi", {})
    openai_server.fail_next(3, status=500)
    for _ in range(3):
        with pytest.raises(ProviderError):
            impl(state, ctx)
    for _ in range(3):
        with pytest.raises(CircuitOpenError, match="source 'gpt' is failing; calls suspended for"):
            impl(state, ctx)
    assert openai_server.call_count == 3  # nothing reached the server while open
    time.sleep(0.55)
    assert impl(state, ctx)["text_result"]
    assert openai_server.call_count == 4


def test_secret_never_leaks(openai_server, monkeypatch, caplog):
    canary = "sk-canary-123456789"
    monkeypatch.setenv("OPENAI_API_KEY", canary)
    monkeypatch.setenv("OPENAI_BASE_URL", openai_server.base_url)
    monkeypatch.setattr(resilience, "sleep", lambda s: None)
    caplog.set_level(logging.DEBUG)
    openai_server.require_key = "sk-the-right-one"  # the server's 401 quotes the key it got
    impl = node_of(make_spec([llm_node(max_retries=1)], SOURCES))
    with pytest.raises(ProviderError) as info:
        impl(initial_state("hi", {}), RunContext())
    assert openai_server.calls[0].headers["authorization"] == f"Bearer {canary}"  # it was sent...
    assert "401 Unauthorized: Incorrect API key provided: ***" in str(info.value)  # ...never shown
    assert canary not in str(info.value) and canary not in repr(info.value.args)

    # a retried failure is logged: the log must be clean too
    openai_server.require_key = None
    openai_server.fail_next(1, status=500)
    openai_server.responder = lambda req: f"my key is {canary}"  # even an echoing model
    update = impl(initial_state("hi", {}), RunContext())
    assert canary not in json.dumps(update) and update["text_result"] == "my key is ***"
    assert canary not in caplog.text
    assert "attempt 1 failed" in caplog.text
