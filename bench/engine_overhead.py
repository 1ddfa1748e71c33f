"""Engine overhead: the triage graph built by AgentFlow vs the same graph written by hand
in LangGraph, both with instant node functions, measured in one run.

Prints per-invoke cost of each, the ratio (ours / hand-written; target <= 1.3x), and the
cost of a compile-cache hit vs a cold build (target: a hit >= 50x cheaper).
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

    def __init__(self, node, spec):
        self.node, self.source = node, None
        self.work = WORK[node.id]

    def __call__(self, state, ctx):
        return self.work(state)

    def estimate_tokens(self, state):
        return 0


def hand_written():
    g = StateGraph(GraphState)
    for name, fn in WORK.items():
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
    spec = WorkflowSpec.model_validate(json.loads(SPEC_PATH.read_text()))
    build_mod.make_node = InstantNode  # instant nodes; everything else is the real builder
    build_mod.clear_cache()
    ours = build_mod.compile_spec(spec)
    theirs = hand_written()
    state = initial_state("draw and explain", {"customer": "acme"})
    config = {"configurable": {CONFIG_KEY: RunContext()}}

    a, b = ours.invoke(state, config), theirs.invoke(state)
    assert a["final_output"] == b["final_output"] and a["tokens_used"] == b["tokens_used"] == 8, (a, b)

    for _ in range(50):  # warm up both
        ours.invoke(state, config)
        theirs.invoke(state)
    t_theirs = timed(lambda: theirs.invoke(state), n)
    t_ours = timed(lambda: ours.invoke(state, config), n)

    def cold():
        build_mod.clear_cache()
        build_mod.compile_spec(spec)

    t_cold = timed(cold, 20)
    build_mod.compile_spec(spec)
    t_hit = timed(lambda: build_mod.compile_spec(spec), 2000)
    result = {
        "hand_written_ms": t_theirs * 1000, "agentflow_ms": t_ours * 1000, "invoke_ratio": t_ours / t_theirs,
        "cold_build_ms": t_cold * 1000, "cache_hit_ms": t_hit * 1000, "cache_speedup": t_cold / t_hit,
    }
    print(f"engine overhead (triage graph, instant nodes, median of 5x{n} invokes)")
    print(f"  hand-written LangGraph : {result['hand_written_ms']:.3f} ms/invoke")
    print(f"  AgentFlow-built        : {result['agentflow_ms']:.3f} ms/invoke")
    print(f"  ratio ours/hand        : {result['invoke_ratio']:.2f}x   (target <= 1.3x)")
    print(f"  cold build             : {result['cold_build_ms']:.3f} ms")
    print(f"  compile-cache hit      : {result['cache_hit_ms']:.4f} ms")
    print(f"  cache hit speed-up     : {result['cache_speedup']:.0f}x   (target >= 50x)")
    return result


if __name__ == "__main__":
    main()
