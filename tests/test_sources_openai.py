"""The OpenAI adapter against the real test server: errors, Retry-After, client cache."""

from __future__ import annotations

import email.utils
import time

import pytest

from agentflow.graph.errors import ProviderError, StepError
from agentflow.graph.sources import parse_retry_after, status_error
from agentflow.graph.sources import openai_llm, openai_image
from agentflow.graph.spec import ImageSource, LLMSource

SOURCE = LLMSource(id="gpt", kind="llm", model="gpt-4o-mini", api_key_env="OPENAI_API_KEY",
                   base_url_env="OPENAI_BASE_URL")


def env_for(server, key="sk-test-key-0001"):
    return {"OPENAI_API_KEY": key, "OPENAI_BASE_URL": server.base_url}


def test_parse_retry_after_forms():
    assert parse_retry_after({"retry-after": "3"}) == 3.0
    assert parse_retry_after({"retry-after": "1.5"}) == 1.5
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    date = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 28 <= parse_retry_after({"retry-after": date}) <= 31
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None


def test_status_error_message_and_retryability():
    e = status_error("llm", "gpt", 429, "Rate limit reached", {"retry-after": "2"})
    assert str(e) == "LLM source 'gpt' answered 429 Too Many Requests: Rate limit reached"
    assert e.retryable and e.status == 429 and e.retry_after == 2
    assert not status_error("api", "x", 404, "").retryable
    assert status_error("api", "x", 408, "").retryable
    assert not status_error("api", "x", 501, "").retryable


def test_chat_plain_and_usage(openai_server):
    result = openai_llm.chat(SOURCE, [{"role": "user", "content": "hello there world"}],
                             env=env_for(openai_server), max_tokens=50, temperature=0.2)
    assert result.text == "Answer: hello there world"
    assert (result.prompt_tokens, result.completion_tokens) == (3, 4)
    body = openai_server.calls[0].json
    assert body["model"] == "gpt-4o-mini" and body["max_tokens"] == 50 and body["temperature"] == 0.2


def test_sdk_does_not_retry_on_its_own(openai_server):
    openai_server.fail_next(1, status=500)
    with pytest.raises(ProviderError) as info:
        openai_llm.chat(SOURCE, [{"role": "user", "content": "x"}], env=env_for(openai_server))
    assert openai_server.call_count == 1  # max_retries=0 in the SDK: retries are ours
    assert str(info.value) == "LLM source 'gpt' answered 500 Internal Server Error: injected failure (500)"


def test_rate_limit_error_keeps_retry_after(openai_server):
    openai_server.fail_next(1, status=429, retry_after=7)
    with pytest.raises(ProviderError) as info:
        openai_llm.chat(SOURCE, [{"role": "user", "content": "x"}], env=env_for(openai_server))
    assert info.value.status == 429 and info.value.retry_after == 7 and info.value.retryable
    assert "429 Too Many Requests" in str(info.value)


def test_connection_refused_is_retryable_and_readable():
    env = {"OPENAI_API_KEY": "sk-x-123456", "OPENAI_BASE_URL": "http://127.0.0.1:9/v1"}
    with pytest.raises(ProviderError) as info:
        openai_llm.chat(SOURCE, [{"role": "user", "content": "x"}], env=env, timeout=2)
    assert info.value.retryable
    assert "could not connect to LLM source 'gpt'" in str(info.value)


def test_timeout_is_retryable(openai_server):
    openai_server.delay = 1.0
    with pytest.raises(ProviderError, match="did not answer within 0.2 s") as info:
        openai_llm.chat(SOURCE, [{"role": "user", "content": "x"}], env=env_for(openai_server), timeout=0.2)
    assert info.value.retryable


def test_missing_key_is_a_clear_error():
    with pytest.raises(StepError, match="needs the environment variable OPENAI_API_KEY"):
        openai_llm.client_for(SOURCE, {})


def test_clients_are_cached_per_key_and_base_url(openai_server):
    a = openai_llm.client_for(SOURCE, env_for(openai_server))
    assert openai_llm.client_for(SOURCE, env_for(openai_server)) is a
    assert openai_llm.client_for(SOURCE, env_for(openai_server, key="sk-other-key-2")) is not a
    assert not any("sk-test-key-0001" in str(k) for k in openai_llm._clients)


def test_no_key_env_uses_placeholder(openai_server):
    src = LLMSource(id="local", kind="llm", model="llama", base_url_env="OPENAI_BASE_URL")
    result = openai_llm.chat(src, [{"role": "user", "content": "hi"}],
                             env={"OPENAI_BASE_URL": openai_server.base_url})
    assert result.text == "Answer: hi"
    assert openai_server.calls[0].headers["authorization"] == "Bearer not-needed"


def test_image_generate_url_and_b64(openai_server):
    env = env_for(openai_server)
    dalle = ImageSource(id="dalle", kind="image", model="dall-e-3", api_key_env="OPENAI_API_KEY",
                        base_url_env="OPENAI_BASE_URL")
    res = openai_image.generate(dalle, "a cat", size="1024x1024", n=2, quality="hd", env=env)
    assert len(res.images) == 2 and res.images[0]["url"].endswith(".png")
    assert openai_server.calls[0].json["quality"] == "hd"
    gimg = dalle.model_copy(update={"model": "gpt-image-1"})
    res = openai_image.generate(gimg, "a cat", size="1024x1024", env=env)
    assert res.images[0]["b64_json"] and res.total_tokens > 0


def test_server_handles_concurrent_requests(openai_server):
    import concurrent.futures

    openai_server.delay = 0.3
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda i: openai_llm.chat(
            SOURCE, [{"role": "user", "content": f"q{i}"}], env=env_for(openai_server)).text, range(6)))
    assert time.monotonic() - started < 1.2
    assert sorted(results) == [f"Answer: q{i}" for i in range(6)]
    assert [c.index for c in openai_server.calls] == [1, 2, 3, 4, 5, 6]


def test_server_fail_every(openai_server):
    openai_server.fail_every(2, status=502)
    outcomes = []
    for _ in range(4):
        try:
            openai_llm.chat(SOURCE, [{"role": "user", "content": "x"}], env=env_for(openai_server))
            outcomes.append("ok")
        except ProviderError as exc:
            outcomes.append(exc.status)
    assert outcomes == ["ok", 502, "ok", 502]
