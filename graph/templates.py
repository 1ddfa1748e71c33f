"""Prompt and parameter templates: `{user_input}`, `{metadata.customer}`.

Templates are rendered by looking names up in the state, never evaluated: no format
spec, no attribute access, no indexing beyond dotted dict keys. `{{` and `}}` are
literal braces.
"""

from __future__ import annotations

import json
import re
from typing import Any

_FIELD = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_\-]+)*)\}")

_MISSING = object()


def template_fields(template: str) -> list[str]:
    """Dotted field names a template refers to."""
    return [m.group(1) for m in _FIELD.finditer(template) if m.group(1)]


def lookup(state: dict[str, Any], dotted: str, default: Any = None) -> Any:
    """Follow a dotted path through dicts only (never getattr)."""
    cur: Any = state
    for part in dotted.split("."):
        if isinstance(cur, dict) and part in cur:
            cur = cur[part]
        else:
            return default
    return cur


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


def render(template: str, state: dict[str, Any]) -> str:
    def sub(m: re.Match) -> str:
        tok = m.group(0)
        if tok == "{{":
            return "{"
        if tok == "}}":
            return "}"
        return _as_text(lookup(state, m.group(1)))

    return _FIELD.sub(sub, template)


def render_value(value: Any, state: dict[str, Any]) -> Any:
    """Render templates inside a JSON value. A string that is exactly one `{field}`
    keeps the field's own type (so a parameter can be a number or a list)."""
    if isinstance(value, str):
        m = _FIELD.fullmatch(value)
        if m and m.group(1):
            return lookup(state, m.group(1))
        return render(value, state)
    if isinstance(value, dict):
        return {k: render_value(v, state) for k, v in value.items()}
    if isinstance(value, list):
        return [render_value(v, state) for v in value]
    return value
