"""Hypothesis strategies for WorkflowSpecs: mostly well-formed graphs, some broken on purpose.

`specs()` draws a spec whose nodes have plausible configs for their type, whose edges form
a connected graph from the start node (sometimes with loops, fan-outs, joins, conditions),
then optionally breaks it in one of the ways users do (a dangling edge, a wrong source kind,
a bad condition, an unknown template field, a duplicate id...). A good share validates, so
"every spec that validates builds" is exercised, not just the error paths.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

NODE_TYPES = ("input", "router", "llm", "image", "db", "aggregator", "api")
SOURCES = [
    {"id": "gpt", "kind": "llm", "model": "gpt-4o-mini", "api_key_env": "OPENAI_API_KEY"},
    {"id": "dalle", "kind": "image", "model": "dall-e-3", "api_key_env": "OPENAI_API_KEY"},
    {"id": "shop", "kind": "db", "driver": "sqlite", "dsn_env": "SHOP_DSN"},
    {"id": "crm", "kind": "api", "base_url": "https://crm.example.com/v1", "auth_env": "CRM_TOKEN"},
]
SOURCE_FOR = {"router": "gpt", "llm": "gpt", "image": "dalle", "db": "shop", "api": "crm"}
STATE_FIELDS = ["user_input", "intent", "text_result", "db_result", "tokens_used", "cost",
                "metadata.tier", "metadata.customer", "final_output"]

ids = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True)
unicode_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)
literals = st.sampled_from(["'text'", "'image'", "'paid'", "1", "0", "10.5", "true", "false", "null",
                            "['a', 'b']", "'é🙂'"])
ops = st.sampled_from(["==", "!=", "<", "<=", ">", ">=", "in", "not in"])


@st.composite
def conditions(draw, fields: list[str]) -> str:
    """A condition from the safe grammar, sometimes nested, occasionally nonsense."""
    if draw(st.integers(1, 40)) == 17:  # now and then (hypothesis favours the ends of a range)
        return draw(st.text(alphabet="abc()[]'\"=<>!. andornotin01_", max_size=30))

    def atom() -> str:
        left = draw(st.sampled_from(fields))
        return f"{left} {draw(ops)} {draw(literals)}"

    expr = atom()
    for _ in range(draw(st.integers(0, 2))):
        joiner = draw(st.sampled_from(["and", "or"]))
        right = atom()
        if draw(st.booleans()):
            right = f"not ({right})"
        expr = f"({expr}) {joiner} {right}" if draw(st.booleans()) else f"{expr} {joiner} {right}"
    return expr


def _template(draw, fields: list[str]) -> str:
    parts = [draw(unicode_text).replace("{", "{{").replace("}", "}}") or "Say"]
    for _ in range(draw(st.integers(0, 2))):
        parts.append("{" + draw(st.sampled_from(fields)) + "}")
        parts.append(draw(st.sampled_from([" ", ": ", "\n", " — "])))
    return "".join(parts)


@st.composite
def node_config(draw, kind: str, fields: list[str], out_key: str | None) -> dict[str, Any]:
    if kind == "input":
        return draw(st.sampled_from([{}, {"defaults": {"tier": "free"}}]))
    if kind == "router":
        if draw(st.booleans()):
            rules = [{"condition": draw(conditions(fields)), "value": draw(st.sampled_from(["text", "image", "x"]))}
                     for _ in range(draw(st.integers(0, 3)))]
            default = "text" if not rules else draw(st.sampled_from([None, "text"]))
            cfg = {"mode": "rules", "rules": rules, "default": default}
        else:
            cfg = {"mode": "llm", "labels": draw(st.lists(st.sampled_from(["text", "image", "both"]), min_size=1,
                                                         max_size=3, unique=True)),
                   "prompt": _template(draw, fields)}
        if out_key:
            cfg["output_key"] = out_key
        return cfg
    if kind == "llm":
        cfg = {"prompt": _template(draw, fields)}
        if draw(st.booleans()):
            cfg["system"] = _template(draw, fields)
        if draw(st.booleans()):
            cfg["max_tokens"] = draw(st.integers(1, 4000))
        if out_key:
            cfg["output_key"] = out_key
        return cfg
    if kind == "image":
        return {"prompt": _template(draw, fields), "n": draw(st.integers(1, 3))}
    if kind == "db":
        query = draw(st.sampled_from(["SELECT 1 AS one", "SELECT * FROM orders WHERE customer = :c",
                                      "select id from orders limit 5"]))
        cfg = {"query": query, "params": {"c": "{metadata.customer}"} if ":c" in query else {}}
        if out_key:
            cfg["output_key"] = out_key
        return cfg
    if kind == "aggregator":
        cfg: dict[str, Any] = {"fields": draw(st.lists(st.sampled_from(fields), min_size=1, max_size=4))}
        if draw(st.booleans()):
            cfg["template"] = _template(draw, fields)
        if out_key:
            cfg["output_key"] = out_key
        return cfg
    return {"method": draw(st.sampled_from(["GET", "POST"])), "path": "/orders/{metadata.customer}"}


BREAKAGES = ["dangling_edge", "wrong_source", "unknown_field", "bad_start", "duplicate_id",
             "unknown_queue", "unknown_config_key", "self_loop", "orphan_node", "bad_id"]


@st.composite
def specs(draw, max_nodes: int = 10, local_only: bool = False, break_it: bool | None = None) -> dict[str, Any]:
    """A WorkflowSpec dict. `local_only`: only input/router(rules)/aggregator nodes (runnable
    without any outside service)."""
    n = draw(st.integers(1, max_nodes))
    node_ids = draw(st.lists(ids, min_size=n, max_size=n, unique=True))
    kinds = ["input"] + [draw(st.sampled_from(("router", "aggregator") if local_only else NODE_TYPES))
                         for _ in range(n - 1)]
    out_keys = [f"out_{i}" if kind not in ("input", "image", "api") and draw(st.booleans()) else None
                for i, kind in enumerate(kinds)]
    fields = STATE_FIELDS + [k for k in out_keys if k]
    nodes = []
    for i, (nid, kind) in enumerate(zip(node_ids, kinds)):
        out_key = out_keys[i]
        cfg = draw(node_config(kind, fields, out_key))
        if local_only and kind == "router":
            cfg = {"mode": "rules", "rules": [{"condition": draw(conditions(fields)), "value": "text"}],
                   "default": "image"}
        node: dict[str, Any] = {"id": nid, "type": kind, "config": cfg}
        if kind in SOURCE_FOR and not (kind == "router" and cfg.get("mode") == "rules"):
            node["source"] = SOURCE_FOR[kind]
        if kind in ("llm", "image") and draw(st.integers(0, 3)) == 0:
            node["queue"] = "q"
        nodes.append(node)

    edges: list[dict[str, Any]] = []
    for i in range(1, n):  # a spanning tree from the start node, so everything is reachable
        parent = node_ids[draw(st.integers(0, i - 1))]
        edge: dict[str, Any] = {"from": parent, "to": node_ids[i]}
        if draw(st.integers(0, 3)) == 0:
            edge["condition"] = draw(conditions(fields))
        edges.append(edge)
    for _ in range(draw(st.integers(0, n))):  # extra edges: fan-outs, joins, back edges (loops)
        a, b = draw(st.integers(0, n - 1)), draw(st.integers(0, n - 1))
        if a == b:
            continue
        edge = {"from": node_ids[a], "to": node_ids[b]}
        if b < a or draw(st.booleans()):
            edge["condition"] = draw(conditions(fields))  # a back edge without one loops forever
        if draw(st.integers(0, 4)) == 0 and n > 2:
            edge["to"] = draw(st.lists(st.sampled_from(node_ids[1:]), min_size=2, max_size=3, unique=True))
        edges.append(edge)

    spec: dict[str, Any] = {"id": draw(ids), "name": draw(st.text(min_size=1, max_size=20).filter(str.strip)),
                            "start_node": node_ids[0], "nodes": nodes, "edges": edges,
                            "sources": [dict(s) for s in SOURCES],
                            "queues": [{"id": "q", "max_messages_per_second": 5, "burst_size": 2,
                                        "sub_queues": [{"id": "paid", "weight": 3}, {"id": "free", "weight": 1}]}]}
    if draw(st.booleans()):
        spec["description"] = draw(unicode_text)

    if break_it is None:
        break_it = draw(st.integers(0, 3)) == 0
    if break_it:
        how = draw(st.sampled_from(BREAKAGES))
        target = draw(st.integers(0, n - 1))
        if how == "dangling_edge":
            spec["edges"].append({"from": node_ids[target], "to": "nowhere_" + node_ids[target]})
        elif how == "wrong_source" and "source" in nodes[target]:
            nodes[target]["source"] = draw(st.sampled_from([s["id"] for s in SOURCES]))
        elif how == "unknown_field" and nodes[target]["type"] == "llm":
            nodes[target]["config"]["prompt"] += " {no_such_field.x}"
        elif how == "bad_start":
            spec["start_node"] = "missing_start"
        elif how == "duplicate_id" and n > 1:
            nodes[-1]["id"] = nodes[0]["id"]
        elif how == "unknown_queue":
            nodes[target]["queue"] = "no_such_queue"
        elif how == "unknown_config_key":
            nodes[target]["config"]["colour"] = "blue"
        elif how == "self_loop":
            spec["edges"].append({"from": node_ids[target], "to": node_ids[target]})
        elif how == "orphan_node":
            nodes.append({"id": "orphan_x", "type": "aggregator", "config": {"fields": ["user_input"]}})
        elif how == "bad_id":
            nodes[target]["id"] = draw(st.sampled_from(["", "1abc", "a b", "ä", "x" * 200]))
    return spec


def big_spec(n: int) -> dict[str, Any]:
    """A valid chain of n nodes (input, then rules routers and aggregators)."""
    nodes = [{"id": "n0", "type": "input"}]
    for i in range(1, n):
        if i % 2:
            nodes.append({"id": f"n{i}", "type": "aggregator", "config": {"fields": ["user_input"]}})
        else:
            nodes.append({"id": f"n{i}", "type": "router",
                          "config": {"rules": [{"condition": "user_input == 'x'", "value": "text"}],
                                     "default": "image"}})
    edges = [{"from": f"n{i}", "to": f"n{i + 1}"} for i in range(n - 1)]
    return {"id": "big", "name": f"{n} nodes", "start_node": "n0", "nodes": nodes, "edges": edges}
