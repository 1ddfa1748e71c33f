"""WorkflowSpec -> compiled LangGraph StateGraph, cached by the spec's content hash.

- unconditional edges become `add_edge`; all conditional edges leaving one node become
  one `add_conditional_edges` whose router returns every target whose condition holds
  (a list target fans out in parallel);
- a node with an `on_error` edge catches its own failure: every edge leaving it becomes
  conditional on the node's outcome (state `_failed`), the on_error edge on failure, the
  others on success;
- a node with several predecessors is a join: it is added with `defer=True`, so it runs
  once, after every branch that was taken has finished;
- node functions read their run context (run id, limiter, observer, dispatcher) from
  the invoke config, so one compiled graph serves every run of the same spec.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Any, Callable

from langgraph.graph import END, START, StateGraph

from . import conditions, pool
from .nodes import make_node
from .runtime import context_from
from .secrets import redact
from .spec import WorkflowSpec
from .state import FAILED, state_type_for
from .step import StepFailed, run_step, step_key

pool.install()  # one thread pool for every run, not one per invoke (graph/pool.py)

_CACHE_SIZE = 256
_cache: "OrderedDict[tuple, Any]" = OrderedDict()
_cache_lock = threading.Lock()


def ask_person(impl, state: dict, ctx, step: int) -> dict:
    """A human node: the recorded answer, or the timeout's choice once its deadline passed,
    or a pause until someone answers (the run holds no worker meanwhile)."""
    node = impl.node
    cfg = node.config
    if ctx.people is None:
        raise StepFailed(node.id, "this run cannot wait for a person (it has no run store)")
    key = step_key(ctx.run_id, node.id, step)
    answered = ctx.people.answer_of(key)
    if answered is not None:
        return answered
    began = ctx.people.ask(ctx.run_id, node.id, key, state, cfg.timeout_s)
    if cfg.timeout_s is not None and time.time() >= began + cfg.timeout_s:
        if cfg.on_timeout is None:
            raise StepFailed(node.id, f"nobody answered within {cfg.timeout_s:g} s")
        ctx.people.answer(ctx.run_id, key, impl.answer(cfg.on_timeout, by="timeout"))
        return ctx.people.answer_of(key) or impl.answer(cfg.on_timeout, by="timeout")
    ctx.wait({"kind": "human", "node": node.id, "key": key, "prompt": impl.question(state),
              "choices": list(cfg.choices), "deadline": began + cfg.timeout_s if cfg.timeout_s else None})
    raise AssertionError("unreachable: ctx.wait pauses the run")


def node_function(spec: WorkflowSpec, impl, catches: bool | None = None) -> Callable:
    """`catches`: the node has an on_error edge (build_graph knows it from one pass over the
    edges; looking it up here per node would make big specs quadratic)."""
    node_id = impl.node.id
    run = _node_run(spec, impl)
    if catches is None:
        catches = any(e.on_error and e.from_ == node_id for e in spec.edges)
    if not catches:
        return run

    def caught(state: dict, config) -> dict:
        """A node with an `on_error` edge: its failure (after its retries; in distributed
        mode the dispatcher's StepFailed) becomes state `error` and a routing mark, so the
        run goes on at the edge's target instead of failing."""
        try:
            update = run(state, config)
        except StepFailed as exc:
            return {"error": {"node": node_id, "message": redact(exc.reason)}, FAILED: {node_id: True}}
        return {**(update or {}), FAILED: {node_id: False}}

    caught.__name__ = run.__name__
    return caught


def _node_run(spec: WorkflowSpec, impl) -> Callable:
    node_id = impl.node.id

    def run(state: dict, config) -> dict:
        ctx = context_from(config)
        # The superstep number makes the step's key stable across a resumed run.
        step = ((config or {}).get("metadata") or {}).get("langgraph_step", 0)
        if impl.asks_person:
            return ask_person(impl, state, ctx, step)
        if ctx.dispatch is not None and impl.calls_outside:
            return ctx.dispatch(node_id, state, step)
        if ctx.resume is None:
            # embedded: a node that starts child runs finds them by this key
            key = step_key(ctx.run_id, node_id, step) if impl.keyed else None
            return run_step(spec, impl, state, ctx, step_key=key)
        key, done = ctx.resume(node_id, step)
        if done is not None:  # it finished before the driver was interrupted
            return done
        return run_step(spec, impl, state, ctx, step_key=key)

    run.__name__ = f"node_{node_id}"
    return run


def _on_failure(node_id: str, failed: bool, predicate: Callable[[dict], bool] | None = None) -> Callable:
    """An edge of a node with an on_error edge: taken only on failure (the on_error edge) or
    only on success (every other edge, with its own condition if it has one)."""
    def holds(state: dict) -> bool:
        if bool((state.get(FAILED) or {}).get(node_id)) != failed:
            return False
        return predicate is None or predicate(state)

    return holds


def _router(branches: list[tuple[Callable[[dict], bool], list[str]]]) -> Callable:
    def route(state: dict) -> list[str]:
        chosen: list[str] = []
        for predicate, targets in branches:
            if predicate(state):
                chosen.extend(t for t in targets if t not in chosen)
        return chosen or [END]

    return route


def build_graph(spec: WorkflowSpec, start: str | None = None) -> StateGraph:
    """`start`: the node execution begins at (default the spec's start_node). A re-run
    from a chosen step starts there, with the state the earlier steps left."""
    out_keys = {getattr(n.config, "output_key", None) for n in spec.nodes} - {None}
    graph = StateGraph(state_type_for(out_keys, on_error=any(e.on_error for e in spec.edges)))

    predecessors: dict[str, set[str]] = {n.id: set() for n in spec.nodes}
    outgoing_of: dict[str, list] = {n.id: [] for n in spec.nodes}  # one pass: big specs stay linear
    on_error_from: set[str] = set()
    for edge in spec.edges:
        outgoing_of[edge.from_].append(edge)
        if edge.on_error:
            on_error_from.add(edge.from_)
        for t in edge.targets:
            predecessors[t].add(edge.from_)

    for node in spec.nodes:
        impl = make_node(node, spec)
        graph.add_node(node.id, node_function(spec, impl, catches=node.id in on_error_from),
                       defer=len(predecessors[node.id]) > 1)

    graph.add_edge(START, start or spec.start_node)
    for node in spec.nodes:
        outgoing = outgoing_of[node.id]
        if not outgoing:
            graph.add_edge(node.id, END)
            continue
        branches = []
        guarded = any(e.on_error for e in outgoing)
        for edge in outgoing:
            predicate = conditions.compile_condition(edge.condition) if edge.condition is not None else None
            if guarded:
                branches.append((_on_failure(node.id, edge.on_error, predicate), edge.targets))
            elif predicate is None:
                for t in edge.targets:
                    graph.add_edge(node.id, t)
            else:
                branches.append((predicate, edge.targets))
        if branches:
            path_map = sorted({t for _, ts in branches for t in ts}) + [END]
            graph.add_conditional_edges(node.id, _router(branches), path_map)
    return graph


def compile_spec(spec: WorkflowSpec, checkpointer: Any = None, start: str | None = None):
    """The compiled graph for a validated spec; cached by content hash (and start node)."""
    start = None if start == spec.start_node else start
    key = (spec.content_hash(), id(checkpointer) if checkpointer is not None else None, start)
    with _cache_lock:
        hit = _cache.get(key)
        if hit is not None:
            _cache.move_to_end(key)
            return hit
    compiled = build_graph(spec, start).compile(checkpointer=checkpointer, name=spec.id)
    with _cache_lock:
        _cache[key] = compiled
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return compiled


def clear_cache() -> None:
    with _cache_lock:
        _cache.clear()
