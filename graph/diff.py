"""What changed between two WorkflowSpecs (GET /workflows/{id}/versions/{a}/diff/{b}).

Both specs are compared with their defaults filled in, so `{"type": "input"}` and
`{"type": "input", "config": {"defaults": {}}}` are the same node.

- nodes, queues, sources: matched by id -> `added` / `removed` ids, and `changed`:
  `[{"id", "fields": [dotted paths]}]` (objects are compared key by key, lists as a whole:
  `config.prompt`, `position.x`, `config.fields`);
- edges: a list `to` is expanded to one edge per target, then edges are compared as
  (from, to, condition) -> `added` / `removed` edge objects `{"from", "to", "condition"}`;
- top: the top-level fields that changed (`name`, `description`, `start_node`, ...).
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from .spec import WorkflowSpec

COLLECTIONS = ("nodes", "queues", "sources")


def normalized(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec with defaults filled in (as stored, if it no longer parses)."""
    try:
        return WorkflowSpec.model_validate(spec).model_dump(mode="json", by_alias=True)
    except ValidationError:
        return dict(spec)


def changed_paths(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Dotted paths where `a` and `b` differ (objects recursed, everything else whole)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for key in sorted(set(a) | set(b), key=str):
            path = f"{prefix}.{key}" if prefix else str(key)
            if key not in a or key not in b:
                out.append(path)
            else:
                out.extend(changed_paths(a[key], b[key], path))
        return out
    return [] if a == b else [prefix]


def _by_id(items: list[Any]) -> dict[str, dict]:
    return {item["id"]: item for item in items or [] if isinstance(item, dict) and "id" in item}


def diff_collection(a: list, b: list) -> dict[str, list]:
    old, new = _by_id(a), _by_id(b)
    changed = []
    for ident in [i for i in old if i in new]:
        fields = changed_paths(old[ident], new[ident])
        if fields:
            changed.append({"id": ident, "fields": fields})
    return {"added": [i for i in new if i not in old], "removed": [i for i in old if i not in new],
            "changed": changed}


def edge_set(edges: list) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for edge in edges or []:
        targets = edge.get("to")
        for target in targets if isinstance(targets, list) else [targets]:
            item = {"from": edge.get("from"), "to": target, "condition": edge.get("condition")}
            if item not in out:
                out.append(item)
    return out


def diff_specs(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """The change from spec `a` to spec `b` (without the from/to version numbers)."""
    a, b = normalized(a), normalized(b)
    old_edges, new_edges = edge_set(a.get("edges")), edge_set(b.get("edges"))
    out: dict[str, Any] = {"nodes": diff_collection(a.get("nodes"), b.get("nodes")),
                           "edges": {"added": [e for e in new_edges if e not in old_edges],
                                     "removed": [e for e in old_edges if e not in new_edges]}}
    for name in COLLECTIONS[1:]:
        out[name] = diff_collection(a.get(name), b.get(name))
    skip = {"edges", *COLLECTIONS}
    out["top"] = [k for k in sorted(set(a) | set(b)) if k not in skip and a.get(k) != b.get(k)]
    return out
