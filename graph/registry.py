"""Node types and source kinds, from entry points (contract section 7).

Every node type, the built-in ones included, is an entry point of the group
`agentflow.nodes` (name = the type); source kinds are entry points of
`agentflow.sources` (name = the kind). Our own pyproject.toml declares the built-ins
(they point at graph/nodes/builtin.py), so a plugin distribution is loaded, validated
and listed exactly like them.

An entry point loads an object with
- `config_model`: a pydantic model class, the node's `config` (a source's own fields);
- `run(config, state) -> dict` (nodes): a partial state update;
- optional `queue` (the Celery queue its steps run on, default `agentflow.api`),
  `description`, and for nodes `source_kind` (the kind of source the node needs).
Built-in registrations also carry their spec model and implementation (`node_model`,
`make`). An entry point that fails to import, or loads something else, is recorded in
`errors()` and skipped: a broken plugin never stops the rest.

Entry points are read once per process; installing a plugin takes a restart.
"""

from __future__ import annotations

import importlib
import logging
import re
import threading
from dataclasses import dataclass, field
from functools import cached_property
from importlib import metadata
from typing import Any, Callable, Literal

from pydantic import BaseModel, Field, create_model

from . import spec

log = logging.getLogger("agentflow.graph.registry")

NODE_GROUP = "agentflow.nodes"
SOURCE_GROUP = "agentflow.sources"
BUILTIN_DIST = "agentflow"
DEFAULT_QUEUE = "agentflow.api"
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]{0,127}$")
_QUEUE = re.compile(r"^[A-Za-z0-9_.\-]{1,200}$")
# = workers.app RUN_QUEUE and CONTROL_QUEUE (graph/ may not import workers/): run
# drivers and node tasks never share a queue, or a waiting driver could starve its steps.
_RESERVED_QUEUES = {"runs", "agentflow.control"}


@dataclass(frozen=True)
class Origin:
    dist: str            # the distribution that declared the entry point
    version: str | None

    @property
    def builtin(self) -> bool:
        return self.dist == BUILTIN_DIST

    def as_dict(self) -> dict[str, Any]:
        return {"kind": "builtin" if self.builtin else "plugin", "package": self.dist, "version": self.version}


@dataclass(frozen=True)
class NodeType:
    name: str
    node_model: type[BaseModel]     # validates one element of a spec's `nodes`
    config_model: type[BaseModel]
    description: str
    queue: str
    origin: Origin
    source_kind: str | None = None
    run: Callable[[Any, dict], dict] | None = None     # plugins
    make: Callable[[Any, Any], Any] | None = None      # built-ins: (node, spec) -> NodeImpl

    def info(self) -> dict[str, Any]:
        """What GET /node-types serves for this type."""
        return {"type": self.name, "description": self.description, "queue": self.queue,
                "source_kind": self.source_kind, "origin": self.origin.as_dict(),
                "schema": self.node_model.model_json_schema(by_alias=True)}


@dataclass(frozen=True)
class SourceKind:
    name: str
    source_model: type[BaseModel]   # validates one element of a spec's `sources`
    description: str
    origin: Origin

    def info(self) -> dict[str, Any]:
        return {"kind": self.name, "description": self.description, "origin": self.origin.as_dict(),
                "schema": self.source_model.model_json_schema(by_alias=True)}


@dataclass(frozen=True)
class LoadError:
    group: str
    name: str
    package: str | None
    version: str | None
    error: str

    def as_dict(self) -> dict[str, Any]:
        return {"group": self.group, "name": self.name, "package": self.package,
                "version": self.version, "error": self.error}


@dataclass
class Registry:
    nodes: dict[str, NodeType] = field(default_factory=dict)
    sources: dict[str, SourceKind] = field(default_factory=dict)
    errors: list[LoadError] = field(default_factory=list)

    # what spec.Node / spec.Source look a tag up in, for every node validated: built once
    @cached_property
    def node_models(self) -> dict[str, type[BaseModel]]:
        return {n: t.node_model for n, t in self.nodes.items()}

    @cached_property
    def source_models(self) -> dict[str, type[BaseModel]]:
        return {n: s.source_model for n, s in self.sources.items()}

    def plugins(self) -> list[dict[str, Any]]:
        """Installed plugin distributions: what each adds, and what failed to load."""
        out: dict[str, dict[str, Any]] = {}

        def entry(dist: str | None, version: str | None) -> dict[str, Any]:
            key = dist or "?"
            return out.setdefault(key, {"package": key, "version": version, "node_types": [],
                                        "source_kinds": [], "errors": []})

        for t in self.nodes.values():
            if not t.origin.builtin:
                entry(t.origin.dist, t.origin.version)["node_types"].append(t.name)
        for s in self.sources.values():
            if not s.origin.builtin:
                entry(s.origin.dist, s.origin.version)["source_kinds"].append(s.name)
        for e in self.errors:
            entry(e.package, e.version)["errors"].append(e.as_dict())
        return sorted(out.values(), key=lambda p: p["package"])


_registry: Registry | None = None
_lock = threading.Lock()


def get() -> Registry:
    """The registry of this process, loaded on first use."""
    global _registry
    if _registry is None:
        with _lock:
            if _registry is None:
                _registry = load()
    return _registry


def reload() -> Registry:
    """Read the entry points again (tests; a process otherwise loads them once)."""
    global _registry
    with _lock:
        _registry = load()
    return _registry


def node_type(name: str) -> NodeType | None:
    return get().nodes.get(name)


def source_kind_of(node_type_name: str) -> str | None:
    t = node_type(node_type_name)
    return t.source_kind if t is not None else None


def node_queues() -> dict[str, str]:
    """Node type -> the Celery queue its steps run on."""
    return {name: t.queue for name, t in get().nodes.items()}


# ---------------------------------------------------------------- loading


def load() -> Registry:
    reg = Registry()
    for group, add in ((NODE_GROUP, _add_node), (SOURCE_GROUP, _add_source)):
        # Built-ins first, so a plugin can never take over a built-in name.
        eps = sorted(metadata.entry_points(group=group), key=lambda ep: (_dist_name(ep) != BUILTIN_DIST, ep.name))
        for ep in eps:
            origin = Origin(_dist_name(ep) or "?", _dist_version(ep))
            try:
                obj = ep.load()
                add(reg, ep.name, obj, origin)
            except Exception as exc:  # noqa: BLE001 - whatever a plugin raises, it must not stop the rest
                message = f"{exc.__class__.__name__}: {exc}"[:2000]
                log.warning("%s entry point %r of %s could not be loaded: %s", group, ep.name, origin.dist, message)
                reg.errors.append(LoadError(group, ep.name, origin.dist, origin.version, message))
    _builtins_without_metadata(reg)
    _order_builtins(reg)
    return reg


def _builtins_without_metadata(reg: Registry) -> None:
    """An install older than our entry points (`pip install -e .` not re-run) declares
    none: take the same registration objects from graph/nodes/builtin.py, and say so."""
    builtin = importlib.import_module(f"{__package__}.nodes.builtin")
    version = _installed_version()
    missing = False
    for table, group, add, have in ((builtin.NODES, NODE_GROUP, _add_node, reg.nodes),
                                    (builtin.SOURCES, SOURCE_GROUP, _add_source, reg.sources)):
        for name, obj in table.items():
            if name not in have and not any(e.group == group and e.name == name for e in reg.errors):
                missing = True
                add(reg, name, obj, Origin(BUILTIN_DIST, version))
    if missing:
        log.warning("agentflow's own entry points are not installed; re-run `pip install -e .` "
                    "(the built-in types were registered directly)")


def _installed_version() -> str | None:
    try:
        return metadata.version(BUILTIN_DIST)
    except metadata.PackageNotFoundError:
        return None


def _dist_name(ep) -> str | None:
    dist = getattr(ep, "dist", None)
    return dist.metadata["Name"] if dist is not None else None


def _dist_version(ep) -> str | None:
    dist = getattr(ep, "dist", None)
    return dist.version if dist is not None else None


def _order_builtins(reg: Registry) -> None:
    """Built-ins in spec.py's order (the order Studio's palette shows), then plugins by name."""
    rank = {name: i for i, name in enumerate(spec.NODE_TYPES)}
    reg.nodes = dict(sorted(reg.nodes.items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[0])))
    srank = {name: i for i, name in enumerate(spec.SOURCE_KINDS)}
    reg.sources = dict(sorted(reg.sources.items(), key=lambda kv: (srank.get(kv[0], len(srank)), kv[0])))


def _check_name(name: str, taken: dict, what: str) -> None:
    if not _NAME.match(name):
        raise ValueError(f"{what} name {name!r} is not an identifier (letters, digits, '_' and '-')")
    if name in taken:
        raise ValueError(f"{what} {name!r} is already defined by {taken[name].origin.dist}")


def _config_model(obj: Any) -> type[BaseModel]:
    model = getattr(obj, "config_model", None)
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise TypeError("config_model must be a pydantic model class")
    return model


def _camel(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[_\-]", name) if part)


def _add_node(reg: Registry, name: str, obj: Any, origin: Origin) -> None:
    _check_name(name, reg.nodes, "node type")
    config = _config_model(obj)
    make = getattr(obj, "make", None) if origin.builtin else None
    run = getattr(obj, "run", None)
    if make is None and not callable(run):
        raise TypeError("the entry point's object needs run(config, state)")
    queue = getattr(obj, "queue", None) or DEFAULT_QUEUE
    if not (isinstance(queue, str) and _QUEUE.match(queue)) or (queue in _RESERVED_QUEUES and not origin.builtin):
        raise ValueError(f"queue {queue!r} is not a valid queue name for node tasks")
    source_kind = getattr(obj, "source_kind", None)
    node_model = getattr(obj, "node_model", None) if origin.builtin else None
    if node_model is None:
        # A plugin's node: the fields every node has, its type, and its config.
        try:
            config()
            config_field: Any = (config, Field(default_factory=config))
        except Exception:  # noqa: BLE001 - the config has required fields
            config_field = (config, ...)
        node_model = create_model(f"{_camel(name)}Node", __base__=spec.NodeBase,
                                  type=(Literal[name], ...), config=config_field)  # type: ignore[call-overload]
    reg.nodes[name] = NodeType(name=name, node_model=node_model, config_model=config,
                               description=str(getattr(obj, "description", "") or ""), queue=queue,
                               origin=origin, source_kind=source_kind, run=run if make is None else None, make=make)


def _add_source(reg: Registry, name: str, obj: Any, origin: Origin) -> None:
    _check_name(name, reg.sources, "source kind")
    config = _config_model(obj)
    source_model = getattr(obj, "source_model", None) if origin.builtin else None
    if source_model is None:
        # A plugin's source: id, description, timeouts, its kind, then its own fields.
        own = {k: (f.annotation, f) for k, f in config.model_fields.items()}
        clash = set(own) & (set(spec.SourceBase.model_fields) | {"kind"})
        if clash:
            raise ValueError(f"config_model may not redefine {sorted(clash)}")
        source_model = create_model(f"{_camel(name)}Source", __base__=spec.SourceBase,
                                    kind=(Literal[name], ...), **own)  # type: ignore[call-overload]
    reg.sources[name] = SourceKind(name=name, source_model=source_model,
                                   description=str(getattr(obj, "description", "") or ""), origin=origin)


def install() -> None:
    """Make spec.py validate nodes and sources with this registry's models."""
    spec.use_types(nodes=lambda: get().node_models, sources=lambda: get().source_models)
