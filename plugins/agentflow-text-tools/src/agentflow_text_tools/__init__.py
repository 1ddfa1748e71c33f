"""Two AgentFlow node types for text, registered through the `agentflow.nodes` entry
points in pyproject.toml.

A node type is an object with `config_model` (a pydantic model: the node's `config`)
and `run(config, state)`, which returns a partial state update (a dict). `queue` names
the Celery queue its steps run on in distributed mode; `description` shows in Studio.
"""

from __future__ import annotations

import re
from typing import Any

from agentflow.graph.templates import render
from pydantic import BaseModel, ConfigDict, Field, field_validator

__version__ = "0.1.0"

# Output keys become state fields: letters, digits and '_' (as for built-in nodes).
OUTPUT_KEY = r"^[A-Za-z][A-Za-z0-9_]*$"


class TextStatsConfig(BaseModel):
    # extra="forbid": a misspelt field is an error with its path, not silently ignored
    model_config = ConfigDict(extra="forbid")

    # "template": True lets `agentflow validate` check the state fields the template names
    text: str = Field("{user_input}", description="Template over the state, e.g. '{text_result}'.",
                      json_schema_extra={"template": True})
    output_key: str = Field("text_stats", pattern=OUTPUT_KEY, max_length=128,
                            description="State field the counts are written to.")


class TextStats:
    """Counts in a rendered text: characters, words, lines, sentences, unique words."""

    config_model = TextStatsConfig
    description = "Count characters, words, lines and sentences of a text"
    queue = "agentflow.text"

    @staticmethod
    def run(config: TextStatsConfig, state: dict[str, Any]) -> dict[str, Any]:
        text = render(config.text, state)
        words = re.findall(r"\w+(?:['’-]\w+)*", text)
        return {config.output_key: {
            "characters": len(text),
            "words": len(words),
            "lines": len(text.splitlines()) if text else 0,
            "sentences": len([s for s in re.split(r"[.!?]+", text) if s.strip()]),
            "unique_words": len({w.lower() for w in words}),
        }}


class RegexExtractConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pattern: str = Field(min_length=1, max_length=1000, description="Python regular expression.")
    text: str = Field("{user_input}", description="Template over the state.", json_schema_extra={"template": True})
    ignore_case: bool = False
    max_matches: int = Field(100, ge=1, le=10_000)
    output_key: str = Field("matches", pattern=OUTPUT_KEY, max_length=128,
                            description="State field the list of matches is written to.")

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from None
        return value


class RegexExtract:
    """Every match of a pattern in a rendered text (the first group when it has groups)."""

    config_model = RegexExtractConfig
    description = "Extract every match of a regular expression from a text"

    @staticmethod
    def run(config: RegexExtractConfig, state: dict[str, Any]) -> dict[str, Any]:
        flags = re.IGNORECASE if config.ignore_case else 0
        found = []
        for m in re.finditer(config.pattern, render(config.text, state), flags):
            found.append(m.group(1) if m.re.groups else m.group(0))
            if len(found) >= config.max_matches:
                break
        return {config.output_key: found}


TEXT_STATS = TextStats()
REGEX_EXTRACT = RegexExtract()
