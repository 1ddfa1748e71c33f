"""What every node implementation shares: its spec node, its source, retries, timeouts."""

from __future__ import annotations

import logging
import math
import os
from typing import Any, Callable, TypeVar

from .. import resilience
from ..errors import StepError
from ..runtime import RunContext
from ..secrets import MissingSecret, read_secret, redact
from ..spec import NODE_SOURCE_KIND

log = logging.getLogger("agentflow.graph.nodes")
T = TypeVar("T")

DEFAULT_MAX_TOKENS_ESTIMATE = 256


class NodeImpl:
    """A callable LangGraph node: `impl(state, ctx) -> partial state update`.

    Subclasses implement `run`. `__call__` adds what every node needs: the node id on
    errors and secrets scrubbed from the update.
    """

    calls_outside: bool = False
    asks_person: bool = False  # a human node: answered through ctx.people
    default_timeout: float = 60.0  # seconds, per attempt
    # True: `run` takes the step's key (`step_key=`), by which what it started is found again
    # when it runs again after a wait (workflow and map nodes)
    keyed: bool = False

    def __init__(self, node: Any, spec: Any):
        self.node = node
        self.spec = spec
        self.source = spec.source(node.source) if getattr(node, "source", None) else None
        if self.needs_source():
            want = self.source_kind()
            if self.source is None:
                raise StepError(f"node '{node.id}' needs a source of kind '{want}'"
                                + (f" (source '{node.source}' is not defined)" if node.source else ""),
                                node_id=node.id)
            if self.source.kind != want:
                raise StepError(f"node '{node.id}' needs a source of kind '{want}', "
                                f"but '{self.source.id}' is of kind '{self.source.kind}'", node_id=node.id)

    def needs_source(self) -> bool:
        return self.calls_outside

    def source_kind(self) -> str | None:
        return NODE_SOURCE_KIND.get(self.node.type)

    # ------------------------------------------------------------ calling

    def __call__(self, state: dict, ctx: RunContext | None = None, step_key: str | None = None) -> dict:
        ctx = ctx or RunContext()
        try:
            update = self.run(state, ctx, step_key=step_key) if self.keyed else self.run(state, ctx)
        except StepError as exc:
            if exc.node_id is None:
                exc.node_id = self.node.id
            raise
        except MissingSecret as exc:
            raise StepError(f"node '{self.node.id}': {exc}", node_id=self.node.id) from None
        check_output_size(self.node.id, update)
        return redact(update)

    def run(self, state: dict, ctx: RunContext) -> dict:
        raise NotImplementedError

    def estimate_tokens(self, state: dict) -> int:
        return 0

    # ------------------------------------------------------------ helpers

    @property
    def max_retries(self) -> int:
        """node `retry` (max_attempts - 1) > node config > source > default 3."""
        policy = getattr(self.node, "retry", None)
        if policy is not None:
            return policy.max_attempts - 1
        for value in (getattr(self.node.config, "max_retries", None),
                      getattr(self.source, "max_retries", None)):
            if value is not None:
                return value
        return resilience.DEFAULT_RETRIES

    @property
    def timeout(self) -> float:
        """Per-attempt timeout in seconds: node config > source > type default."""
        for value in (getattr(self.node.config, "timeout_seconds", None),
                      getattr(self.source, "timeout_seconds", None)):
            if value is not None:
                return float(value)
        return self.default_timeout

    def call_source(self, fn: Callable[[], T]) -> T:
        """Run one call to the source with our retries and its circuit breaker. A node's own
        `retry` policy waits exactly backoff_s, then twice that, and so on (no jitter: the
        user asked for those waits)."""
        policy = getattr(self.node, "retry", None)
        if policy is not None:
            return resilience.call(self.source.id, fn, retries=self.max_retries,
                                   base_delay=policy.backoff_s, max_delay=3600.0, jitter=False)
        return resilience.call(self.source.id, fn, retries=self.max_retries)

    def secret(self, env_name: str | None, ctx: RunContext, required: bool = True) -> str | None:
        try:
            return read_secret(env_name, ctx.env, required=required)
        except MissingSecret as exc:  # names the secret and where it was looked for, never a value
            raise StepError(f"source '{self.source.id if self.source else '?'}' needs the {exc.where}, "
                            "which is not set", node_id=self.node.id) from None


def max_output_bytes() -> int:
    return int(os.environ.get("AGENTFLOW_MAX_STEP_OUTPUT_BYTES", str(16 * 2**20)))


def check_output_size(node_id: str, update: Any, limit: int | None = None) -> None:
    """Refuse an update whose JSON form would exceed `limit` bytes (about).

    A loop can make a node's output grow on every turn: an aggregator that collects (or a
    template that repeats) its own earlier output doubles it, so 200 turns exhaust any
    memory, and every copy, log and stored step on the way costs as much (found by
    tests/fuzz: a valid spec took the test process to 24 GB). The walk counts shared
    objects each time they are reached, as JSON would, and stops at the limit, so it costs
    O(limit) at worst, however large the value."""
    limit = max_output_bytes() if limit is None else limit
    size = 0
    stack = [update]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            size += len(value) + 2
        elif isinstance(value, dict):
            size += 2 + 2 * len(value)
            for key, item in value.items():
                size += len(key) + 3 if isinstance(key, str) else 8
                stack.append(item)
        elif isinstance(value, (list, tuple)):
            size += 2 + len(value)
            stack.extend(value)
        elif isinstance(value, (bytes, bytearray)):
            size += len(value)
        else:
            size += 8
        if size > limit:
            raise StepError(f"its output is larger than {limit / 2**20:g} MB (a loop that feeds a node its own "
                            "output grows it on every turn)", node_id=node_id)


def estimate_prompt_tokens(*texts: str | None, max_tokens: int | None = None) -> int:
    """Rough estimate for rate limiting: 4 characters a token, plus the answer budget."""
    chars = sum(len(t) for t in texts if t)
    return math.ceil(chars / 4) + (max_tokens or DEFAULT_MAX_TOKENS_ESTIMATE)


def usage_update(tokens: int | None, cost: float | None) -> dict:
    out: dict[str, Any] = {}
    if tokens is not None:
        out["tokens_used"] = int(tokens)
    if cost is not None:
        out["cost"] = float(cost)
    return out
