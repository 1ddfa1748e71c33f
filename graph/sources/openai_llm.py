"""OpenAI (or any OpenAI-compatible server) chat completions, plain and streaming."""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import openai

from ..errors import ProviderError, StepError
from ..secrets import MissingSecret, read_secret, redact
from . import KIND_LABEL, status_error

_clients: dict[tuple[str, str | None], openai.OpenAI] = {}
_clients_lock = threading.Lock()


def client_for(source: Any, env: Mapping[str, str] | None, timeout: float = 60.0) -> openai.OpenAI:
    """One SDK client per (key, base_url). Secrets are read now, at call time, so a
    rotated key is picked up; the cache is keyed by the key's hash, not the key."""
    try:
        api_key = read_secret(source.api_key_env, env) if source.api_key_env else None
    except MissingSecret as exc:
        raise StepError(f"source '{source.id}' needs the {exc.where}, which is not set") from None
    base_url = read_secret(source.base_url_env, env, required=False) if source.base_url_env else None
    key = (hashlib.sha256((api_key or "").encode()).hexdigest(), base_url)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            # max_retries=0: retries are ours (resilience.py), with the breaker around them.
            client = openai.OpenAI(api_key=api_key or "not-needed", base_url=base_url or None,
                                   max_retries=0, timeout=timeout)
            _clients[key] = client
        return client


def clear_clients() -> None:
    with _clients_lock:
        for client in _clients.values():
            client.close()
        _clients.clear()


def _provider_detail(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
        if isinstance(inner, str):
            return inner
    if isinstance(body, str) and body:
        return body
    return exc.message


def convert_error(exc: BaseException, source: Any, kind: str, timeout: float | None) -> BaseException:
    """openai SDK exception -> ProviderError with a readable, redacted message."""
    label = f"{KIND_LABEL.get(kind, kind)} source '{source.id}'"
    if isinstance(exc, openai.APIStatusError):
        return status_error(kind, source.id, exc.status_code, _provider_detail(exc), exc.response.headers)
    if isinstance(exc, openai.APITimeoutError):
        return ProviderError(f"{label} did not answer within {timeout:g} s" if timeout else f"{label} timed out",
                             retryable=True)
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__ or exc
        return ProviderError(redact(f"could not connect to {label}: {cause}"), retryable=True)
    if isinstance(exc, openai.APIResponseValidationError):
        return ProviderError(redact(f"{label} sent a response we could not read: {exc}"), retryable=False)
    if isinstance(exc, openai.OpenAIError):
        return StepError(redact(f"{label}: {exc}"))
    return exc


@dataclass
class ChatResult:
    text: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    model: str | None = None
    # function calls the model asked for: [{"id", "name", "arguments" (the JSON text)}]
    tool_calls: list[dict] = field(default_factory=list)

    def assistant_message(self) -> dict:
        """The reply as a chat message, to send back with the tools' answers."""
        msg: dict[str, Any] = {"role": "assistant", "content": self.text or None}
        if self.tool_calls:
            msg["tool_calls"] = [{"id": c["id"], "type": "function",
                                  "function": {"name": c["name"], "arguments": c["arguments"]}}
                                 for c in self.tool_calls]
        return msg

    @property
    def total_tokens(self) -> int | None:
        if self.prompt_tokens is None and self.completion_tokens is None:
            return None
        return (self.prompt_tokens or 0) + (self.completion_tokens or 0)


def chat(source: Any, messages: list[dict], *, env: Mapping[str, str] | None = None,
         max_tokens: int | None = None, temperature: float | None = None, timeout: float = 60.0,
         on_delta: Callable[[str], None] | None = None, tools: list[dict] | None = None) -> ChatResult:
    """One chat completion. With `on_delta`, streams and calls it for each text delta.
    `tools`: OpenAI function definitions the model may call (the reply's `tool_calls`)."""
    client = client_for(source, env, timeout)
    kwargs: dict[str, Any] = {"model": source.model, "messages": messages, "timeout": timeout}
    if tools:
        kwargs["tools"] = tools
        on_delta = None  # a reply that may be a function call is read whole
    if max_tokens is not None:
        kwargs["max_tokens"] = max_tokens
    if temperature is not None:
        kwargs["temperature"] = temperature
    try:
        if on_delta is None:
            resp = client.chat.completions.create(**kwargs)
            if not resp.choices:
                raise ProviderError(f"LLM source '{source.id}' answered with no choices", retryable=True)
            msg = resp.choices[0].message
            text = msg.content if msg.content is not None else (getattr(msg, "refusal", None) or "")
            usage = resp.usage
            calls = [{"id": c.id, "name": c.function.name, "arguments": c.function.arguments or "{}"}
                     for c in (getattr(msg, "tool_calls", None) or []) if getattr(c, "function", None)]
            return ChatResult(text, usage.prompt_tokens if usage else None,
                              usage.completion_tokens if usage else None, resp.model, calls)
        return _stream(client, kwargs, on_delta)
    except openai.OpenAIError as exc:
        raise convert_error(exc, source, "llm", timeout) from None


def _stream(client: openai.OpenAI, kwargs: dict, on_delta: Callable[[str], None]) -> ChatResult:
    parts: list[str] = []
    result = ChatResult("")
    with client.chat.completions.create(stream=True, stream_options={"include_usage": True},
                                        **kwargs) as stream:
        for chunk in stream:
            result.model = chunk.model or result.model
            if chunk.usage:  # final chunk when include_usage is honoured
                result.prompt_tokens = chunk.usage.prompt_tokens
                result.completion_tokens = chunk.usage.completion_tokens
            for choice in chunk.choices or []:
                delta = choice.delta.content if choice.delta else None
                if delta:
                    parts.append(delta)
                    on_delta(delta)
    result.text = "".join(parts)
    return result
