"""tool: calls one tool of an MCP server (contract section 8); and the tool calls of an
`llm` node, each recorded as a step of its own and charged to the node's queue."""

from __future__ import annotations

import json
import time
from typing import Any, Callable

from ..errors import RateLimitExceeded, StepError
from ..secrets import redact
from ..sources import mcp
from ..step import describe, queue_plan
from ..templates import render_value
from .base import NodeImpl


class ToolNodeImpl(NodeImpl):
    calls_outside = True

    def run(self, state, ctx):
        cfg = self.node.config
        arguments = render_value(cfg.arguments, state)
        result = self.call_source(lambda: mcp.call_tool(self.source, cfg.tool, arguments, env=ctx.env,
                                                         timeout=self.timeout))
        if result.is_error:
            raise StepError(redact(f"tool {cfg.tool!r} of mcp source '{self.source.id}' failed: "
                                   f"{result.text or '(no message)'}"))
        return {cfg.output_key: result.value}


def _limiter(ctx):
    """The limiter a node's extra calls are charged to: the run's (embedded, driver) or the
    one a node task took the node's own grant from (it runs with ctx.limiter unset)."""
    return ctx.limiter if ctx.limiter is not None else ctx.extra.get("queue_limiter")


def tool_step(impl: NodeImpl, state: dict, ctx, index: int, name: str, arguments: dict,
              call: Callable[[], Any]) -> Any:
    """Run one tool call of a node as a step of its own, `<node>.tool:<name>`: recorded by
    the observer (its step key derived from the node's, so it never answers for the node),
    and charged to the node's queue like any call the node makes."""
    node = impl.node
    step_name = f"{node.id}.tool:{name}"[:128]  # the length of a step's node_id column
    extra: dict[str, Any] = {}
    if getattr(ctx.observer, "records_input", False):
        extra["input"] = {"tool": name, "arguments": arguments}
        base = getattr(ctx.observer, "step_key", None)
        if base:
            extra["step_key"] = f"{base}:tool:{index}"
    ctx.observer.step_started(ctx.run_id, step_name, "tool_call", 1, **extra)
    started = time.perf_counter()
    limiter = _limiter(ctx)
    plan = queue_plan(impl.spec, node, state, ctx.tenant_id) if limiter is not None else None
    decision = None
    try:
        if plan is not None:
            decision = limiter.acquire(plan[0], plan[1], 0, timeout=ctx.max_limit_wait)
            if not decision.allowed:
                raise RateLimitExceeded(f"queue {node.queue!r} gave no slot within {ctx.max_limit_wait:.0f} s")
        result = call()
    except Exception as exc:
        ctx.observer.step_failed(ctx.run_id, step_name, error=describe(exc),
                                 duration_ms=(time.perf_counter() - started) * 1000)
        raise
    finally:
        if decision is not None:
            limiter.settle(plan[0], decision, 0)
    output = {"tool_result": result.value, "is_error": result.is_error}
    ctx.observer.step_finished(ctx.run_id, step_name, update=redact(output), tokens=0, cost=0.0,
                               duration_ms=(time.perf_counter() - started) * 1000)
    return result


def openai_tools(tools: list[mcp.Tool]) -> list[dict]:
    return [{"type": "function", "function": {"name": t.name, "description": t.description[:1024],
                                              "parameters": t.input_schema or {"type": "object"}}}
            for t in tools]


def parse_arguments(text: str) -> dict:
    try:
        value = json.loads(text or "{}")
    except json.JSONDecodeError as exc:
        raise StepError(f"the model asked for a tool with arguments that are not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise StepError("the model asked for a tool with arguments that are not a JSON object")
    return value
