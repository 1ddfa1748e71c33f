"""GraphState and its reducers, declared once.

Parallel branches write to the same state in one LangGraph superstep, so fields that
several branches may touch need reducers: tokens and cost add up, metadata merges.
"""

from __future__ import annotations

import operator
from typing import Annotated, Any, TypedDict


def merge_dicts(left: dict | None, right: dict | None) -> dict:
    """Shallow-merge metadata updates; the later writer wins per key."""
    out = dict(left or {})
    out.update(right or {})
    return out


def last_value(left: Any, right: Any) -> Any:
    """Output channels: a later write replaces the earlier one, and two parallel
    writers do not crash the run (LangGraph's default channel raises on that)."""
    return right


# Which nodes with an on_error edge failed in their last step ({node id: bool}): what their
# edges route on (graph/build.py). Not a valid output_key, so it never clashes with one; a
# channel of the specs with on_error edges only.
FAILED = "_failed"


class GraphState(TypedDict, total=False):
    user_input: str
    intent: Annotated[Any, last_value]
    text_result: Annotated[Any, last_value]
    image_result: Annotated[Any, last_value]
    db_result: Annotated[Any, last_value]
    api_result: Annotated[Any, last_value]
    final_output: Annotated[Any, last_value]
    error: Annotated[Any, last_value]  # {node, message} after an on_error edge was taken
    tokens_used: Annotated[int, operator.add]
    cost: Annotated[float, operator.add]
    metadata: Annotated[dict, merge_dicts]


BASE_FIELDS: frozenset[str] = frozenset(GraphState.__annotations__)


def state_type_for(extra_keys: set[str], on_error: bool = False) -> type:
    """GraphState plus a last-value channel for each custom node output_key, and the
    FAILED channel when some edge is an on_error edge (only then: a dict channel shows in
    every final state, empty)."""
    extra = sorted(k for k in extra_keys if k not in BASE_FIELDS)
    if not extra and not on_error:
        return GraphState
    fields = dict(GraphState.__annotations__)
    for key in extra:
        fields[key] = Annotated[Any, last_value]
    if on_error:
        fields[FAILED] = Annotated[dict, merge_dicts]
        extra.append("on_error")
    return TypedDict("GraphState_" + "_".join(extra)[:80], fields, total=False)  # type: ignore[operator]


def initial_state(user_input: Any = "", metadata: dict | None = None, **extra: Any) -> dict:
    state: dict[str, Any] = {"user_input": user_input, "tokens_used": 0, "cost": 0.0,
                             "metadata": dict(metadata or {})}
    state.update(extra)
    return state
