"""router: picks a branch label, by rules over the state or by asking an LLM."""

from __future__ import annotations

import re

from ..conditions import compile_condition
from ..errors import InvalidOutput, StepError
from ..sources import openai_llm
from ..templates import render
from .base import NodeImpl, estimate_prompt_tokens
from .llm import chat_usage, report_model_call

_EDGE_PUNCT = " \t\r\n\"'`.,;:!?()[]{}<>*_“”‘’"
DEFAULT_PROMPT = "Classify the request.\n\n{user_input}"


def match_label(answer: str, labels: list[str]) -> str | None:
    """The label an answer names: an exact match after normalising, else the single
    label found in it as a whole word (so "Intent: image." -> "image")."""
    norm = answer.strip().strip(_EDGE_PUNCT).lower()
    for label in labels:
        if norm == label.strip().lower():
            return label
    hits = [label for label in labels
            if re.search(rf"(?<![\w-]){re.escape(label.strip().lower())}(?![\w-])", norm)]
    return hits[0] if len(hits) == 1 else None


class RouterNodeImpl(NodeImpl):
    def __init__(self, node, spec):
        self.calls_outside = node.config.mode == "llm"
        super().__init__(node, spec)
        cfg = node.config
        self._rules = [(compile_condition(r.condition), r.value) for r in cfg.rules]
        if self.calls_outside and not cfg.labels:
            raise StepError(f"router '{node.id}' in llm mode needs at least one label", node_id=node.id)

    def prompt(self, state: dict) -> str:
        cfg = self.node.config
        text = render(cfg.prompt or DEFAULT_PROMPT, state)
        return f"{text}\n\nChoose one of: {', '.join(cfg.labels)}. Answer with the label only."

    def estimate_tokens(self, state):
        return estimate_prompt_tokens(self.prompt(state)) if self.calls_outside else 0

    def run(self, state, ctx):
        return self._ask_llm(state, ctx) if self.calls_outside else self._apply_rules(state)

    def _apply_rules(self, state: dict) -> dict:
        cfg = self.node.config
        for predicate, value in self._rules:
            if predicate(state):
                return {cfg.output_key: value}
        if cfg.default is not None:
            return {cfg.output_key: cfg.default}
        raise StepError(f"router '{self.node.id}': no rule matched and no default is set "
                        f"(rules: {'; '.join(r.condition for r in cfg.rules) or 'none'})")

    def _ask_llm(self, state: dict, ctx) -> dict:
        cfg = self.node.config
        messages = [{"role": "user", "content": self.prompt(state)}]
        result = self.call_source(lambda: openai_llm.chat(
            self.source, messages, env=ctx.env, temperature=cfg.temperature, timeout=self.timeout))
        report_model_call(ctx, self.node.id, self.source, result)
        label = match_label(result.text, cfg.labels)
        if label is None:
            shown = result.text if len(result.text) <= 200 else result.text[:200] + "..."
            raise InvalidOutput(f"router '{self.node.id}' got the answer {shown!r}, which is not one of "
                                f"the labels {', '.join(repr(x) for x in cfg.labels)}")
        return {cfg.output_key: label, **chat_usage(self.source, result)}
