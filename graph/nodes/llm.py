"""llm: one chat completion; streams tokens to the observer when asked to."""

from __future__ import annotations

from ..pricing import llm_cost
from ..sources import openai_llm
from ..templates import render
from .base import NodeImpl, estimate_prompt_tokens, usage_update


def chat_usage(source, result: openai_llm.ChatResult) -> dict:
    """tokens_used / cost for one call, when the provider reported usage."""
    if result.total_tokens is None:
        return {}
    cost = llm_cost(source, source.model or result.model, result.prompt_tokens or 0,
                    result.completion_tokens or 0)
    return usage_update(result.total_tokens, cost)


class LLMNodeImpl(NodeImpl):
    calls_outside = True

    def messages(self, state: dict) -> list[dict]:
        cfg = self.node.config
        msgs = []
        if cfg.system:
            msgs.append({"role": "system", "content": render(cfg.system, state)})
        msgs.append({"role": "user", "content": render(cfg.prompt, state)})
        return msgs

    def estimate_tokens(self, state):
        return estimate_prompt_tokens(*(m["content"] for m in self.messages(state)),
                                      max_tokens=self.node.config.max_tokens)

    def run(self, state, ctx):
        cfg = self.node.config
        messages = self.messages(state)
        on_delta = None
        if cfg.stream or ctx.extra.get("stream"):
            def on_delta(delta: str) -> None:
                ctx.observer.token(ctx.run_id, self.node.id, delta)

        result = self.call_source(lambda: openai_llm.chat(
            self.source, messages, env=ctx.env, max_tokens=cfg.max_tokens,
            temperature=cfg.temperature, timeout=self.timeout, on_delta=on_delta))
        return {cfg.output_key: result.text, **chat_usage(self.source, result)}
