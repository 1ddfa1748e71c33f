"""llm: one chat completion; streams tokens to the observer when asked to. With `tools`
(ids of mcp sources), a bounded function-calling loop: the model may call those servers'
tools, at most `max_tool_calls` times a step; each call is a step of its own."""

from __future__ import annotations

from contextlib import ExitStack

from ..errors import StepError
from ..pricing import llm_cost
from ..sources import mcp, openai_llm
from ..templates import render
from .base import NodeImpl, estimate_prompt_tokens, usage_update
from .tool import openai_tools, parse_arguments, tool_step


def report_model_call(ctx, node_id: str, source, result: openai_llm.ChatResult) -> None:
    """Tell an observer that wants it (OpenTelemetry's) about one model call: GenAI
    attributes (model, token usage) for the step's span. Nothing else is passed on."""
    hook = getattr(ctx.observer, "model_call", None)
    if hook is not None:
        hook(ctx.run_id, node_id, system=getattr(source, "provider", None) or "openai",
             model=source.model, response_model=result.model, input_tokens=result.prompt_tokens,
             output_tokens=result.completion_tokens)


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

        if cfg.tools:
            return self._with_tools(state, ctx, messages)
        result = self._chat(ctx, messages, on_delta=on_delta)
        return {cfg.output_key: result.text, **chat_usage(self.source, result)}

    def _chat(self, ctx, messages: list[dict], **kwargs) -> openai_llm.ChatResult:
        cfg = self.node.config
        result = self.call_source(lambda: openai_llm.chat(
            self.source, messages, env=ctx.env, max_tokens=cfg.max_tokens,
            temperature=cfg.temperature, timeout=self.timeout, **kwargs))
        report_model_call(ctx, self.node.id, self.source, result)
        return result

    def tool_sources(self) -> list:
        sources = []
        for source_id in self.node.config.tools:
            source = self.spec.source(source_id)
            if source is None or source.kind != "mcp":
                raise StepError(f"llm node '{self.node.id}': tools names '{source_id}', which is not "
                                "an mcp source of the spec")
            sources.append(source)
        return sources

    def _with_tools(self, state: dict, ctx, messages: list[dict]) -> dict:
        """Chat, run the tools the model asks for, send their answers back; again until the
        model answers in text. After max_tool_calls calls the model is asked once more
        with no tools offered, so the step always ends with an answer."""
        cfg = self.node.config
        prompt_tokens = completion_tokens = 0
        cost = 0.0
        seen_usage = False
        calls = 0
        with ExitStack() as stack:
            by_name: dict[str, tuple[mcp.Connection, str]] = {}
            offered: list[mcp.Tool] = []
            for source in self.tool_sources():
                conn = stack.enter_context(mcp.Connection(source, ctx.env, self.timeout))
                for tool in conn.tools():
                    # two servers may offer the same name: the later one is qualified by its source
                    name = tool.name if tool.name not in by_name else f"{source.id}__{tool.name}"
                    by_name[name] = (conn, tool.name)
                    offered.append(mcp.Tool(name, tool.description, tool.input_schema))
            functions = openai_tools(offered)
            while True:
                offer = functions if calls < cfg.max_tool_calls else None
                result = self._chat(ctx, messages, tools=offer)
                if result.total_tokens is not None:
                    seen_usage = True
                    prompt_tokens += result.prompt_tokens or 0
                    completion_tokens += result.completion_tokens or 0
                    cost += chat_usage(self.source, result).get("cost", 0.0)
                if not result.tool_calls or offer is None:
                    break
                messages.append(result.assistant_message())
                for call in result.tool_calls:
                    if calls >= cfg.max_tool_calls:
                        answer = f"not run: this step may call tools at most {cfg.max_tool_calls} times"
                    elif call["name"] not in by_name:
                        answer = f"error: there is no tool named {call['name']!r}"
                    else:
                        calls += 1
                        conn, tool_name = by_name[call["name"]]
                        arguments = parse_arguments(call["arguments"])
                        done = tool_step(self, state, ctx, calls, tool_name, arguments,
                                         lambda: conn.call(tool_name, arguments, self.timeout))
                        answer = done.text if not done.is_error else f"error: {done.text}"
                    messages.append({"role": "tool", "tool_call_id": call["id"], "content": answer})
        update = {cfg.output_key: result.text}
        if seen_usage:
            update.update(usage_update(prompt_tokens + completion_tokens, cost))
        return update
