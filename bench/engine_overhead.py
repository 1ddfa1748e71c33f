"""Engine overhead: the triage graph built by AgentFlow vs the same graph written by hand
in LangGraph, both with instant node functions, measured in one run.

Ours and the anchor are timed in alternating batches (the machine is shared; its speed
drifts within seconds); each ratio is the median of the per-round ratios. Prints:
- one invoke, no observer and no limiter (target <= 1.3x);
- one invoke with a step observer and the in-process limiter on (every queued node charged),
  against the hand-written graph whose node functions call the same observer and the same
  limiter themselves (target <= 1.1x);
- the deny path: the limiter has no grant for the first queued node (max wait 0), so the run
  stops there, against the hand-written graph stopping on the same denial;
- the compile cache from stored JSON: json text -> parse + validate + build (cold, anchor)
  vs the same json text -> parse -> hash lookups (a hit) (target: a hit >= 100x cheaper).
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

from langgraph.graph import END, START, StateGraph

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agentflow.graph import build as build_mod  # noqa: E402
from agentflow.graph.runtime import CONFIG_KEY, RunContext  # noqa: E402
from agentflow.graph.spec import WorkflowSpec  # noqa: E402
from agentflow.graph.state import GraphState, initial_state  # noqa: E402

SPEC_PATH = Path(__file__).resolve().parent.parent / "examples" / "triage.json"

# The instant work each node does, shared by both graphs so only the engine differs.
WORK = {
    "input": lambda s: {},
    "router": lambda s: {"intent": "both", "tokens_used": 3, "cost": 0.0001},
    "writer": lambda s: {"text_result": "hello", "tokens_used": 5, "cost": 0.0002},
    "painter": lambda s: {"image_result": {"url": "x"}, "cost": 0.04},
    "orders": lambda s: {"db_result": [{"id": 1}]},
    "final": lambda s: {"final_output": {k: s.get(k) for k in ("intent", "text_result", "image_result", "db_result")}},
}


class InstantNode:
    calls_outside = False
    asks_person = False
    keyed = False

    def __init__(self, node, spec):
        self.node, self.source = node, None
        self.work = WORK[node.id]

    def __call__(self, state, ctx):
        return self.work(state)

    def estimate_tokens(self, state):
        return 0


def hand_written(work: dict | None = None):
    g = StateGraph(GraphState)
    for name, fn in (work or WORK).items():
        g.add_node(name, fn, defer=(name == "final"))
    g.add_edge(START, "input")
    g.add_edge("input", "router")
    g.add_edge("input", "orders")

    def route(s):
        return {"text": ["writer"], "image": ["painter"], "both": ["writer", "painter"]}.get(s.get("intent"), [END])

    g.add_conditional_edges("router", route, ["writer", "painter", END])
    g.add_edge("writer", "final")
    g.add_edge("painter", "final")
    g.add_edge("orders", "final")
    g.add_edge("final", END)
    return g.compile()


class ListObserver:
    """A step observer that keeps its events in memory (what a recording observer does,
    minus the store), the same object on both sides."""

    def __init__(self):
        self.events = []

    def step_started(self, run_id, node_id, node_type, attempt, **_extra):
        self.events.append(("start", node_id))

    def step_finished(self, run_id, node_id, *, update, tokens, cost, duration_ms):
        self.events.append(("end", node_id, tokens))

    def step_failed(self, run_id, node_id, *, error, duration_ms):
        self.events.append(("fail", node_id))

    def token(self, run_id, node_id, delta):
        pass


class Denied(Exception):
    pass


def hand_written_observed(spec, observer, limiter, limits: dict):
    """The hand-written graph, each node function doing the observer and limiter calls ours
    makes around a step: started, acquire (queued nodes), the work, settle, finished."""
    import time as _t

    types = {n.id: n.type for n in spec.nodes}
    queued = {n.id: n.queue for n in spec.nodes if n.queue}

    def wrap(name, fn):
        q = queued.get(name)

        def step(s):
            observer.step_started("adhoc", name, types[name], 1)
            t0 = _t.perf_counter()
            d = None
            if q is not None:
                lim, sub = limits[q]
                d = limiter.acquire(lim, sub, 0, timeout=0.0)
                if not d.allowed:
                    observer.step_failed("adhoc", name, error="denied", duration_ms=0.0)
                    raise Denied(name)
            update = fn(s)
            if d is not None:
                limiter.settle(limits[q][0], d, int(update.get("tokens_used") or 0))
            observer.step_finished("adhoc", name, update=update, tokens=int(update.get("tokens_used") or 0),
                                   cost=float(update.get("cost") or 0.0), duration_ms=(_t.perf_counter() - t0) * 1000)
            return update
        return step

    return hand_written({name: wrap(name, fn) for name, fn in WORK.items()})


def open_limits(raw: dict, deny: str | None = None) -> dict:
    """The spec with queues that always grant (or, `deny`: that queue never grants)."""
    raw = json.loads(json.dumps(raw))
    for q in raw.get("queues", []):
        never = q["id"] == deny
        q.update({"max_messages_per_second": 1e-6 if never else 1e9, "burst_size": 1 if never else 10**6,
                  "max_requests_per_minute": None, "max_tokens_per_minute": None})
    raw["id"] = f"{raw['id']}-{deny or 'open'}"
    return raw


def paired(ours, theirs, n: int, rounds: int = 9) -> tuple[float, float, float]:
    """Batches of ours and theirs alternating (the order flips every round), so both see the
    same machine: (median s/call ours, median s/call theirs, median of the per-round ratios)."""
    a, b, ratios = [], [], []
    for i in range(rounds):
        pair = {}
        for name, fn in (("a", ours), ("b", theirs)) if i % 2 == 0 else (("b", theirs), ("a", ours)):
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            pair[name] = (time.perf_counter() - t0) / n
        a.append(pair["a"])
        b.append(pair["b"])
        ratios.append(pair["a"] / pair["b"])
    return statistics.median(a), statistics.median(b), statistics.median(ratios)


def timed(fn, n: int) -> float:
    """Median of 5 batches, seconds per call."""
    batches = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        batches.append((time.perf_counter() - t0) / n)
    return statistics.median(batches)


def main(n: int = 300) -> dict:
    from agentflow.graph import validate as validate_mod
    from agentflow.graph.step import StepFailed, limit_namespace
    from agentflow.ratelimit import QueueLimits
    from agentflow.ratelimit.memory import MemoryLimiter

    text = SPEC_PATH.read_text()
    spec = WorkflowSpec.model_validate(json.loads(text))
    build_mod.make_node = InstantNode  # instant nodes; everything else is the real builder
    build_mod.clear_cache()
    ours = build_mod.compile_spec(spec)
    theirs = hand_written()
    state = initial_state("draw and explain", {"customer": "acme"})
    config = {"configurable": {CONFIG_KEY: RunContext()}}

    a, b = ours.invoke(state, config), theirs.invoke(state)
    assert a["final_output"] == b["final_output"] and a["tokens_used"] == b["tokens_used"] == 8, (a, b)

    # observer and limiter on, both sides: the same observer class, the same limiter
    open_spec = WorkflowSpec.model_validate(open_limits(json.loads(text)))
    ours_obs = build_mod.compile_spec(open_spec)
    obs_ours, obs_theirs = ListObserver(), ListObserver()
    lim_ours, lim_theirs = MemoryLimiter(), MemoryLimiter()

    def limits_of(sp):
        out = {}
        for q in sp.queues:
            out[q.id] = (QueueLimits(f"{limit_namespace(sp.id)}:{q.id}", q.max_messages_per_second,
                                     q.max_requests_per_minute, q.max_tokens_per_minute, q.burst_size,
                                     tuple((x.id, float(x.weight)) for x in q.sub_queues)),
                         q.sub_queues[0].id if q.sub_queues else None)
        return out

    theirs_obs = hand_written_observed(open_spec, obs_theirs, lim_theirs, limits_of(open_spec))
    config_obs = {"configurable": {CONFIG_KEY: RunContext(observer=obs_ours, limiter=lim_ours)}}
    a, b = ours_obs.invoke(state, config_obs), theirs_obs.invoke(state)
    assert a["final_output"] == b["final_output"], (a, b)
    assert len(obs_ours.events) == len(obs_theirs.events) == 12, (obs_ours.events, obs_theirs.events)

    # the deny path: the `llm` queue never grants; the router (first queued node) is denied
    deny_spec = WorkflowSpec.model_validate(open_limits(json.loads(text), deny="llm"))
    ours_deny = build_mod.compile_spec(deny_spec)
    theirs_deny = hand_written_observed(deny_spec, obs_theirs, lim_theirs, limits_of(deny_spec))
    config_deny = {"configurable": {CONFIG_KEY: RunContext(observer=obs_ours, limiter=lim_ours, max_limit_wait=0.0)}}

    def invoke_denied(graph, *args):
        try:
            graph.invoke(state, *args)
        except (StepFailed, Denied):
            return
        raise AssertionError("the deny path ran to the end")

    invoke_denied(ours_deny, config_deny)
    invoke_denied(theirs_deny)

    def clear_obs():
        obs_ours.events.clear()
        obs_theirs.events.clear()

    for _ in range(50):  # warm up all
        ours.invoke(state, config)
        theirs.invoke(state)
        ours_obs.invoke(state, config_obs)
        theirs_obs.invoke(state)
    clear_obs()
    t_ours, t_theirs, r_plain = paired(lambda: ours.invoke(state, config), lambda: theirs.invoke(state), n)
    t_ours_obs, t_theirs_obs, r_obs = paired(lambda: ours_obs.invoke(state, config_obs),
                                             lambda: theirs_obs.invoke(state), n)
    clear_obs()
    t_ours_deny, t_theirs_deny, r_deny = paired(lambda: invoke_denied(ours_deny, config_deny),
                                                lambda: invoke_denied(theirs_deny), n)
    clear_obs()

    # the compile cache, from the stored JSON text as a worker reads it
    def clear_all():
        build_mod.clear_cache()
        with validate_mod._parsed_lock:
            validate_mod._parsed.clear()

    def cold():
        clear_all()
        build_mod.compile_spec(validate_mod.parse_valid(json.loads(text)))

    def hit():
        build_mod.compile_spec(validate_mod.parse_valid(json.loads(text)))

    hit()
    t_cold, t_hit, r_cache = paired(cold, lambda: [hit() for _ in range(100)], 10)
    t_hit /= 100
    t_lookup = timed(lambda: build_mod.compile_spec(spec), 2000)  # the old figure: an already-parsed object
    result = {
        "hand_written_ms": t_theirs * 1000, "agentflow_ms": t_ours * 1000, "invoke_ratio": r_plain,
        "hand_written_observed_ms": t_theirs_obs * 1000, "agentflow_observed_ms": t_ours_obs * 1000,
        "observed_ratio": r_obs,
        "hand_written_deny_ms": t_theirs_deny * 1000, "agentflow_deny_ms": t_ours_deny * 1000,
        "deny_ratio": r_deny,
        "cold_build_ms": t_cold * 1000, "cache_hit_ms": t_hit * 1000, "cache_speedup": r_cache * 100,
        "lookup_only_ms": t_lookup * 1000,
    }
    print(f"engine overhead (triage graph, instant nodes, 9 alternating rounds of {n} invokes each, median)")
    print(f"  hand-written LangGraph : {result['hand_written_ms']:.3f} ms/invoke")
    print(f"  AgentFlow-built        : {result['agentflow_ms']:.3f} ms/invoke")
    print(f"  ratio ours/hand        : {result['invoke_ratio']:.2f}x   (target <= 1.3x)")
    print(f"  with observer + limiter: {result['agentflow_observed_ms']:.3f} vs hand-written doing the same calls "
          f"{result['hand_written_observed_ms']:.3f} ms: {result['observed_ratio']:.2f}x   (target <= 1.1x)")
    print(f"  deny path (router denied): {result['agentflow_deny_ms']:.3f} vs {result['hand_written_deny_ms']:.3f} ms: "
          f"{result['deny_ratio']:.2f}x")
    print(f"  cold parse+validate+build from JSON : {result['cold_build_ms']:.3f} ms")
    print(f"  cache hit from the same JSON text   : {result['cache_hit_ms']:.4f} ms "
          f"(lookup on a parsed object {result['lookup_only_ms']:.4f} ms)")
    print(f"  cache hit speed-up     : {result['cache_speedup']:.0f}x   (target >= 100x)")
    return result


if __name__ == "__main__":
    main()
