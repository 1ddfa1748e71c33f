"""Validation: schema, references and graph logic, every problem reported at once.

Each element (node, edge, queue, source) is parsed on its own, so one broken node does
not hide the reference and graph errors of the rest. Every error carries the JSON path
of what it names, e.g. `nodes[2].source` or `edges[3].condition`.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable

import orjson
import sqlglot
from pydantic import TypeAdapter, ValidationError

from . import conditions, registry
from .spec import Edge, Node, Queue, Source, WorkflowSpec
from .state import BASE_FIELDS
from .templates import template_fields


@dataclass(frozen=True)
class Problem:
    path: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"path": self.path, "message": self.message}


class SpecInvalid(ValueError):
    """Raised by `parse_valid` with every problem attached."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        lines = "; ".join(f"{p.path}: {p.message}" for p in problems[:5])
        more = f" (+{len(problems) - 5} more)" if len(problems) > 5 else ""
        super().__init__(f"invalid workflow spec: {lines}{more}")

    @property
    def errors(self) -> list[dict[str, str]]:
        return [p.as_dict() for p in self.problems]


_NODE = TypeAdapter(Node)
_EDGE = TypeAdapter(Edge)
_QUEUE = TypeAdapter(Queue)
_SOURCE = TypeAdapter(Source)
_TOP_FIELDS = {"id", "name", "description", "start_node", "nodes", "edges", "queues", "sources"}
_MAX_PROBLEMS = 1000
# (workflow id, version or None for the latest) -> that saved spec (a dict), or None when
# there is no such workflow or version. The API and the CLI pass one backed by the store
# (graph/ does not import it), so references of workflow and map nodes can be checked.
Resolver = Callable[[str, "int | None"], "dict | None"]
_MAX_DEPTH = 64  # nesting of child workflows followed when looking for recursion
_parsed: "OrderedDict[bytes, WorkflowSpec]" = OrderedDict()
_parsed_lock = threading.Lock()


def _join(base: str, loc: tuple) -> str:
    path = base
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path


def _schema_problems(base: str, exc: ValidationError) -> list[Problem]:
    out = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        loc = tuple(p for p in loc if not (isinstance(p, str) and p.startswith("function-")))
        msg = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        elif err["type"] == "union_tag_invalid":
            msg = f"{msg.split('.')[0]}"
        out.append(Problem(_join(base, loc), msg))
    return out


def _parse_list(data: dict, key: str, adapter: TypeAdapter, problems: list[Problem]) -> list[tuple[int, Any]]:
    raw = data.get(key, [])
    if raw is None:
        raw = []
    if not isinstance(raw, list):
        problems.append(Problem(key, "must be a list"))
        return []
    parsed = []
    for i, item in enumerate(raw):
        try:
            parsed.append((i, adapter.validate_python(item)))
        except ValidationError as exc:
            problems.extend(_schema_problems(f"{key}[{i}]", exc))
    return parsed


def validate(data: Any, resolver: Resolver | None = None) -> list[Problem]:
    """Every problem with `data` (a spec as parsed JSON). Never raises.

    `resolver`: looks saved workflows up, so a workflow or map node naming one that does not
    exist, or a workflow that can reach itself through them, is an error. Without it only
    a node naming its own workflow is caught."""
    try:
        problems = _validate(data)
        if isinstance(data, dict):
            problems += _check_children(data, resolver)
        return problems[:_MAX_PROBLEMS]
    except RecursionError:
        return [Problem("", "spec is nested too deeply")]


def parse_valid(data: Any) -> WorkflowSpec:
    """The spec model, or SpecInvalid listing every problem.

    Workers parse the same stored spec for every run and step; a full validation costs
    milliseconds (SQL parsing included), so valid specs are remembered by their content.
    """
    key = _content_key(data) if isinstance(data, dict) else None
    if key is not None:
        with _parsed_lock:
            hit = _parsed.get(key)
            if hit is not None:
                _parsed.move_to_end(key)
                return hit
    problems = validate(data)
    if problems:
        raise SpecInvalid(problems)
    spec = WorkflowSpec.model_validate(data)
    if key is not None:
        with _parsed_lock:
            _parsed[key] = spec
            while len(_parsed) > 512:
                _parsed.popitem(last=False)
    return spec


def _content_key(data: dict) -> bytes | None:
    """The spec's canonical bytes (orjson, sorted keys), used as the cache key as they are:
    2 us for the triage spec, where a sha256 of `json.dumps(sort_keys=True)` took 35 us."""
    try:
        return orjson.dumps(data, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS, default=str)
    except TypeError:  # orjson.JSONEncodeError (e.g. an integer over 64 bits): not cached
        return None


def _validate(data: Any) -> list[Problem]:
    problems: list[Problem] = []
    if not isinstance(data, dict):
        return [Problem("", "a workflow spec must be a JSON object")]

    for key in data:
        if key not in _TOP_FIELDS:
            problems.append(Problem(str(key), "unknown field"))
    for key, kind in (("id", str), ("name", str), ("start_node", str)):
        if key not in data:
            problems.append(Problem(key, "field required"))
        elif not isinstance(data[key], kind) or not data[key]:
            problems.append(Problem(key, "must be a non-empty string"))
    if "description" in data and data["description"] is not None and not isinstance(data["description"], str):
        problems.append(Problem("description", "must be a string"))
    if not problems:
        try:  # id pattern and name length
            WorkflowSpec.model_validate({**{k: data[k] for k in ("id", "name", "start_node")},
                                         "nodes": [{"id": "x", "type": "input"}]})
        except ValidationError as exc:
            problems.extend(_schema_problems("", exc))

    nodes = _parse_list(data, "nodes", _NODE, problems)
    edges = _parse_list(data, "edges", _EDGE, problems)
    queues = _parse_list(data, "queues", _QUEUE, problems)
    sources = _parse_list(data, "sources", _SOURCE, problems)
    if isinstance(data.get("nodes"), list) and not data["nodes"]:
        problems.append(Problem("nodes", "a workflow needs at least one node"))

    # Ids as written, even of elements that failed to parse, so references to a
    # broken node are not reported as dangling on top of its own error.
    raw_ids = {key: _raw_ids(data.get(key)) for key in ("nodes", "queues", "sources")}
    problems += _duplicates(data)

    node_by_id = {n.id: (i, n) for i, n in nodes}
    queue_by_id = {q.id: q for _, q in queues}
    source_by_id = {s.id: s for _, s in sources}

    start = data.get("start_node")
    if isinstance(start, str) and start and start not in raw_ids["nodes"]:
        problems.append(Problem("start_node", f"start node {start!r} is not a node of this workflow"))

    problems += _check_nodes(nodes, queue_by_id, source_by_id, raw_ids)
    known_fields = set(BASE_FIELDS) | {_output_key(n) for _, n in nodes if _output_key(n)}
    problems += _check_edges(edges, raw_ids["nodes"], known_fields)
    problems += _check_templates(nodes, known_fields)
    problems += _check_queues(queues, known_fields)
    problems += [p for i, src in sources if src.kind == "mcp" for p in _check_mcp_source(f"sources[{i}]", src)]
    if isinstance(start, str) and start in raw_ids["nodes"]:
        # Graph checks use every node id as written, so a node with a config error
        # does not make everything behind it look unreachable.
        raw_nodes = [(i, it["id"]) for i, it in enumerate(data["nodes"])
                     if isinstance(it, dict) and isinstance(it.get("id"), str)]
        problems += _check_graph(start, raw_nodes, edges)
    return problems


def _raw_ids(items: Any) -> set[str]:
    if not isinstance(items, list):
        return set()
    return {it["id"] for it in items if isinstance(it, dict) and isinstance(it.get("id"), str)}


def _duplicates(data: dict) -> list[Problem]:
    out = []
    for key in ("nodes", "queues", "sources"):
        items = data.get(key)
        if not isinstance(items, list):
            continue
        seen: dict[str, int] = {}
        for i, it in enumerate(items):
            ident = it.get("id") if isinstance(it, dict) else None
            if not isinstance(ident, str):
                continue
            if ident in seen:
                out.append(Problem(f"{key}[{i}].id", f"duplicate id {ident!r} (also {key}[{seen[ident]}])"))
            else:
                seen[ident] = i
    return out


def _output_key(node) -> str | None:
    return getattr(node.config, "output_key", None)


def _check_nodes(nodes, queue_by_id, source_by_id, raw_ids) -> list[Problem]:
    out = []
    for i, node in nodes:
        base = f"nodes[{i}]"
        needed = registry.source_kind_of(node.type)
        if node.type == "router" and node.config.mode == "rules":
            needed = None
        if node.source is not None:
            src = source_by_id.get(node.source)
            if src is None:
                if node.source not in raw_ids["sources"]:
                    out.append(Problem(f"{base}.source", f"unknown source {node.source!r}"))
            elif needed is None:
                out.append(Problem(f"{base}.source", f"a {node.type} node{' in rules mode' if node.type == 'router' else ''} takes no source"))
            elif src.kind != needed:
                out.append(Problem(f"{base}.source",
                                   f"source {src.id!r} is of kind {src.kind!r}; a {node.type} node needs a {needed!r} source"))
        elif needed is not None:
            out.append(Problem(f"{base}.source", f"a {node.type} node needs a source of kind {needed!r}"))

        if node.queue is not None:
            queue = queue_by_id.get(node.queue)
            if queue is None:
                if node.queue not in raw_ids["queues"]:
                    out.append(Problem(f"{base}.queue", f"unknown queue {node.queue!r}"))
            elif node.sub_queue is not None and node.sub_queue not in {s.id for s in queue.sub_queues}:
                out.append(Problem(f"{base}.sub_queue", f"queue {queue.id!r} has no sub-queue {node.sub_queue!r}"))
        elif node.sub_queue is not None:
            out.append(Problem(f"{base}.sub_queue", "a sub_queue needs a queue"))

        cfg = node.config
        if node.type == "router":
            out += _check_router(base, cfg)
        elif node.type == "db":
            out += _check_sql(base, cfg)
        elif node.type == "llm":
            out += _check_llm_tools(base, cfg, source_by_id, raw_ids)
    return out


def _check_llm_tools(base: str, cfg, source_by_id, raw_ids) -> list[Problem]:
    """`tools` names mcp sources of the spec, each once."""
    out = []
    for j, source_id in enumerate(cfg.tools):
        src = source_by_id.get(source_id)
        if src is None:
            if source_id not in raw_ids["sources"]:
                out.append(Problem(f"{base}.config.tools[{j}]", f"unknown source {source_id!r}"))
        elif src.kind != "mcp":
            out.append(Problem(f"{base}.config.tools[{j}]",
                               f"source {source_id!r} is of kind {src.kind!r}; tools must name mcp sources"))
    if len(set(cfg.tools)) != len(cfg.tools):
        out.append(Problem(f"{base}.config.tools", "each mcp source may be named once"))
    return out


def _check_mcp_source(base: str, src) -> list[Problem]:
    """A stdio server needs a command, an http one a url; neither takes the other's fields."""
    out = []
    if src.transport == "stdio":
        if not src.command:
            out.append(Problem(f"{base}.command", "an mcp source with transport 'stdio' needs a command"))
        if src.url is not None:
            out.append(Problem(f"{base}.url", "a url is for transport 'http'"))
    else:
        if not src.url:
            out.append(Problem(f"{base}.url", "an mcp source with transport 'http' needs a url"))
        for field in ("command", "args", "env"):
            if getattr(src, field):
                out.append(Problem(f"{base}.{field}", f"{field} is for transport 'stdio'"))
    return out


def _check_router(base: str, cfg) -> list[Problem]:
    out = []
    if cfg.mode == "llm":
        if not cfg.labels:
            out.append(Problem(f"{base}.config.labels", "an llm router needs at least one label"))
        if not cfg.prompt:
            out.append(Problem(f"{base}.config.prompt", "an llm router needs a prompt"))
        if len(set(cfg.labels)) != len(cfg.labels):
            out.append(Problem(f"{base}.config.labels", "labels must be unique"))
    else:
        if not cfg.rules and cfg.default is None:
            out.append(Problem(f"{base}.config.rules", "a rules router needs rules or a default"))
        for j, rule in enumerate(cfg.rules):
            try:
                conditions.parse(rule.condition)
            except conditions.ConditionError as exc:
                out.append(Problem(f"{base}.config.rules[{j}].condition", f"condition does not parse: {exc}"))
    return out


_WRITES = (sqlglot.exp.Insert, sqlglot.exp.Update, sqlglot.exp.Delete, sqlglot.exp.Merge,
           sqlglot.exp.Create, sqlglot.exp.Drop, sqlglot.exp.Alter, sqlglot.exp.Command,
           sqlglot.exp.TruncateTable, sqlglot.exp.Into, sqlglot.exp.Lock)


def _check_sql(base: str, cfg) -> list[Problem]:
    path = f"{base}.config.query"
    try:
        statements = [s for s in sqlglot.parse(cfg.query, read="postgres") if s is not None]
    except (sqlglot.errors.ParseError, sqlglot.errors.TokenError) as exc:
        return [Problem(path, f"query does not parse: {str(exc).splitlines()[0][:200]}")]
    if len(statements) != 1:
        return [Problem(path, f"a db node runs exactly one statement (found {len(statements)})")]
    stmt = statements[0]
    if not isinstance(stmt, sqlglot.exp.Query) or any(True for _ in stmt.find_all(*_WRITES)):
        return [Problem(path, "a db node runs read-only queries: one SELECT (WITH ... SELECT, UNION) only")]
    out = []
    used = {p.name for p in stmt.find_all(sqlglot.exp.Placeholder) if p.name}
    for name in sorted(used - set(cfg.params)):
        out.append(Problem(f"{base}.config.params", f"query uses :{name} but params has no {name!r}"))
    for name in sorted(set(cfg.params) - used):
        out.append(Problem(f"{base}.config.params.{name}", f"parameter {name!r} is not used by the query"))
    return out


def _field_known(dotted: str, known: set[str]) -> bool:
    head = dotted.split(".", 1)[0]
    return head in known


def _check_edges(edges, node_ids: set[str], known: set[str]) -> list[Problem]:
    out = []
    on_error_of: dict[str, int] = {}
    for i, edge in edges:
        base = f"edges[{i}]"
        if edge.on_error:
            if edge.condition is not None:
                out.append(Problem(f"{base}.condition", "an on_error edge takes no condition: it is taken "
                                                        "exactly when its node fails"))
            if edge.from_ in on_error_of:
                out.append(Problem(f"{base}.on_error", f"node {edge.from_!r} already has an on_error edge "
                                                       f"(edges[{on_error_of[edge.from_]}])"))
            else:
                on_error_of[edge.from_] = i
        if edge.from_ not in node_ids:
            out.append(Problem(f"{base}.from", f"unknown node {edge.from_!r}"))
        for j, target in enumerate(edge.targets):
            if target not in node_ids:
                where = f"{base}.to" if isinstance(edge.to, str) else f"{base}.to[{j}]"
                out.append(Problem(where, f"unknown node {target!r}"))
        if isinstance(edge.to, list) and len(set(edge.to)) != len(edge.to):
            out.append(Problem(f"{base}.to", "a node appears twice in the same fan-out"))
        if edge.condition is not None:
            try:
                tree = conditions.parse(edge.condition)
            except conditions.ConditionError as exc:
                out.append(Problem(f"{base}.condition", f"condition does not parse: {exc}"))
                continue
            for name in sorted(conditions.fields(tree)):
                if not _field_known(name, known):
                    out.append(Problem(f"{base}.condition",
                                       f"condition names unknown state field {name!r}"))
    return out


def _check_templates(nodes, known: set[str]) -> list[Problem]:
    out = []
    for i, node in nodes:
        scope = known | {"item"} if node.type == "map" else known  # map: `input` renders each item
        if node.type == "map" and not _field_known(node.config.over, known):
            out.append(Problem(f"nodes[{i}].config.over", f"unknown state field {node.config.over!r}"))
        for path, text in _template_strings(node.config):
            for name in template_fields(text):
                if not _field_known(name, scope):
                    out.append(Problem(f"nodes[{i}].config.{path}",
                                       f"template references unknown state field {{{name}}}"))
        if node.type == "aggregator":
            for j, name in enumerate(node.config.fields):
                if not _field_known(name, known):
                    out.append(Problem(f"nodes[{i}].config.fields[{j}]", f"unknown state field {name!r}"))
    return out


def _template_strings(cfg):
    # A plugin's config marks its template fields: Field(json_schema_extra={"template": True}).
    marked = tuple(n for n, f in type(cfg).model_fields.items()
                   if isinstance(f.json_schema_extra, dict) and f.json_schema_extra.get("template") is True)
    names = ("prompt", "system", "template", "path", "input", *marked)
    for name in names:
        value = getattr(cfg, name, None)
        if isinstance(value, str):
            yield name, value
    for name in ("params", "query", "headers", "body", "metadata", "arguments"):
        value = getattr(cfg, name, None)
        if name == "query" and isinstance(value, str):
            continue  # SQL text: parameters come through params only
        yield from _walk_strings(name, value)


def _walk_strings(path: str, value):
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _walk_strings(f"{path}.{k}", v)
    elif isinstance(value, list):
        for j, v in enumerate(value):
            yield from _walk_strings(f"{path}[{j}]", v)


def _check_queues(queues, known: set[str]) -> list[Problem]:
    out = []
    for i, queue in queues:
        base = f"queues[{i}]"
        if queue.concurrency_key is not None:
            if queue.max_concurrency is None:
                out.append(Problem(f"{base}.concurrency_key", "a concurrency_key needs max_concurrency"))
            names = template_fields(queue.concurrency_key)
            if not names:
                out.append(Problem(f"{base}.concurrency_key",
                                   "a concurrency_key is a template naming a state field, e.g. '{metadata.customer}'"))
            for name in names:
                if not _field_known(name, known):
                    out.append(Problem(f"{base}.concurrency_key",
                                       f"template references unknown state field {{{name}}}"))
        if not any((queue.max_messages_per_second, queue.max_requests_per_minute, queue.max_tokens_per_minute)):
            if queue.burst_size is not None or queue.sub_queues:
                out.append(Problem(base, "a queue with burst_size or sub_queues needs a rate limit"))
        seen = set()
        for j, sub in enumerate(queue.sub_queues):
            if sub.id in seen:
                out.append(Problem(f"{base}.sub_queues[{j}].id", f"duplicate sub-queue {sub.id!r}"))
            seen.add(sub.id)
    return out


def _check_graph(start: str, nodes, edges) -> list[Problem]:
    idx: dict[str, int] = {}
    for i, n in nodes:
        idx.setdefault(n, i)
    ids = list(idx)
    out_edges: dict[str, list[tuple[str, bool]]] = {n: [] for n in ids}
    for _, edge in edges:
        if edge.from_ not in out_edges:
            continue
        for t in edge.targets:
            if t in out_edges:
                out_edges[edge.from_].append((t, edge.condition is not None))

    out = []
    seen = {start}
    stack = [start]
    while stack:
        for t, _ in out_edges[stack.pop()]:
            if t not in seen:
                seen.add(t)
                stack.append(t)
    for n in ids:
        if n not in seen:
            out.append(Problem(f"nodes[{idx[n]}]", f"node {n!r} cannot be reached from start node {start!r}"))

    for comp in _cycles(ids, out_edges):
        members = set(comp)
        leaves = any(t not in members for n in comp for t, _ in out_edges[n])
        # A loop can only end if some edge inside it is conditional (otherwise it
        # re-fires forever) and some edge leads out of it.
        breakable = any(cond for n in comp for t, cond in out_edges[n] if t in members)
        if not (leaves and breakable):
            first = min(comp, key=lambda n: idx[n])
            why = "no edge leaves it" if not leaves else "every edge inside it is unconditional"
            out.append(Problem(f"nodes[{idx[first]}]",
                               f"cycle {' -> '.join(sorted(comp, key=lambda n: idx[n]))} has no exit: {why}"))
    return out


def _cycles(ids: list[str], out_edges) -> list[list[str]]:
    """Strongly connected components that contain a cycle (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    result = []
    counter = 0
    for root in ids:
        if root in index:
            continue
        work = [(root, 0)]
        while work:
            node, pos = work.pop()
            if pos == 0:
                index[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            succ = out_edges[node]
            if pos < len(succ):
                work.append((node, pos + 1))
                t = succ[pos][0]
                if t not in index:
                    work.append((t, 0))
                elif t in on_stack:
                    low[node] = min(low[node], index[t])
                continue
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == node:
                        break
                if len(comp) > 1 or any(t == node for t, _ in out_edges[node]):
                    result.append(comp)
    return result


def _child_refs(data: Any) -> list[tuple[int, str, int | None]]:
    """(node index, workflow id, version) of every workflow and map node of a spec dict."""
    out = []
    nodes = data.get("nodes") if isinstance(data, dict) else None
    for i, node in enumerate(nodes if isinstance(nodes, list) else []):
        if isinstance(node, dict) and node.get("type") in ("workflow", "map"):
            cfg = node.get("config") or {}
            if isinstance(cfg, dict) and isinstance(cfg.get("workflow"), str):
                version = cfg.get("version")
                out.append((i, cfg["workflow"], version if isinstance(version, int) else None))
    return out


def _check_children(data: dict, resolver: Resolver | None) -> list[Problem]:
    """Workflow and map nodes: the workflows they name exist (with a resolver), and none of
    them leads back to this workflow (it would start itself without end)."""
    me = data.get("id")
    out = []
    for i, wid, version in _child_refs(data):
        path = f"nodes[{i}].config.workflow"
        if wid == me:
            out.append(Problem(path, f"workflow {me!r} runs itself: a workflow may not reach itself "
                                     "through workflow or map nodes"))
            continue
        if resolver is None:
            continue
        child = resolver(wid, version)
        if child is None:
            if version is not None and resolver(wid, None) is not None:
                out.append(Problem(f"nodes[{i}].config.version", f"workflow {wid!r} has no version {version}"))
            else:
                out.append(Problem(path, f"unknown workflow {wid!r}: save it first"))
            continue
        chain = _path_back(me, wid, child, resolver)
        if chain is not None:
            out.append(Problem(path, f"workflow {me!r} reaches itself: {' -> '.join([me, *chain])}; a workflow "
                                     "may not reach itself through workflow or map nodes"))
    return out


def _path_back(me: str, wid: str, spec: dict, resolver: Resolver) -> list[str] | None:
    """The chain of workflow ids from `wid` back to `me`, if the saved workflows lead there."""
    seen: set[tuple[str, int | None]] = set()
    stack: list[tuple[list[str], dict]] = [([wid], spec)]
    while stack:
        chain, current = stack.pop()
        if len(chain) > _MAX_DEPTH:
            continue
        for _, child, version in _child_refs(current):
            if child == me:
                return [*chain, me]
            if (child, version) in seen:
                continue
            seen.add((child, version))
            found = resolver(child, version)
            if found is not None:
                stack.append(([*chain, child], found))
    return None
