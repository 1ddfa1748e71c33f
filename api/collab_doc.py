"""The layout of a workflow's shared Yjs document, the same in Studio (studio/lib/collab.ts).

Every value is a JSON string, so numbers and nested objects read back the same in
JavaScript and Python, and an edit replaces one field, not the whole spec:

    meta     Map     top-level spec fields but the lists below (id, name, start_node ...)
    nodes    Map     node id -> Map of that node's fields (type, config, position ...)
    order    Array   node ids in spec order
    edges    Array   one JSON edge each
    queues   Array   one JSON queue each
    sources  Array   one JSON source each

Two people who edit different fields of one node, or different nodes, both keep their edit.
"""

from __future__ import annotations

import json
from typing import Any

from pycrdt import Array, Doc, Map

LISTS = ("edges", "queues", "sources")
SEED_CLIENT_ID = 1  # the seed is the same bytes on every replica, so two seeds merge into one


def _dump(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def roots(doc: Doc) -> dict[str, Any]:
    out: dict[str, Any] = {"meta": doc.get("meta", type=Map), "nodes": doc.get("nodes", type=Map),
                           "order": doc.get("order", type=Array)}
    for name in LISTS:
        out[name] = doc.get(name, type=Array)
    return out


def seed_update(spec: dict[str, Any]) -> bytes:
    """The update that writes `spec` into an empty document: made by a fixed client id, so
    replicas that seed the same version at once make identical updates, which Yjs merges."""
    doc = Doc(client_id=SEED_CLIENT_ID)
    r = roots(doc)
    with doc.transaction(origin="seed"):
        for key, value in spec.items():
            if key not in LISTS and key != "nodes":
                r["meta"][key] = _dump(value)
        for node in spec.get("nodes") or []:
            r["nodes"][str(node.get("id"))] = Map({k: _dump(v) for k, v in node.items()})
            r["order"].append(str(node.get("id")))
        for name in LISTS:
            for item in spec.get(name) or []:
                r[name].append(_dump(item))
    return doc.get_update()


def read_spec(doc: Doc) -> dict[str, Any]:
    """The spec the document holds (what Studio shows)."""
    r = roots(doc)
    spec: dict[str, Any] = {k: json.loads(v) for k, v in r["meta"].items()}
    nodes_map = r["nodes"]
    seen: set[str] = set()
    ids = [i for i in r["order"] if i in nodes_map and not (i in seen or seen.add(i))]
    ids += sorted(i for i in nodes_map.keys() if i not in seen)
    spec["nodes"] = [{k: json.loads(v) for k, v in nodes_map[i].items()} for i in ids]
    for name in LISTS:
        items = [json.loads(v) for v in r[name]]
        if items or name == "edges":  # an empty optional list reads as absent, as Studio writes it
            spec[name] = items
    return spec


def is_empty(doc: Doc) -> bool:
    r = roots(doc)
    return len(r["meta"]) == 0 and len(r["nodes"]) == 0
