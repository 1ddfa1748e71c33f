"""Hypothesis over specs and inputs for the validator and the builder.

- validating any drawn spec returns problems with a path and a message, never raises;
- every spec that validates builds (and compiles) without raising;
- a local-only spec (input, rules routers, aggregators) that validates runs to an end
  with any input: a final state, or a readable failure (e.g. a loop that never meets its
  exit condition hits the recursion limit), never a crash of another kind;
- a 10,000-node spec validates and builds within seconds and bounded memory. The seconds are
  this process's CPU time (`time.process_time`), so other work on the machine cannot fail them.
"""

from __future__ import annotations

import json
import time
import tracemalloc

import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from langgraph.errors import GraphRecursionError

from agentflow.graph import build
from agentflow.graph.runtime import RunContext
from agentflow.graph.step import StepFailed
from agentflow.graph.validate import parse_valid, validate
from agentflow.runs.advance import invoke, state_from_input
from tests.fuzz.strategies import big_spec, specs

def fuzz(n: int) -> settings:
    return settings(max_examples=n, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])

json_leaf = (st.none() | st.booleans() | st.integers(-2**63, 2**63) | st.floats(allow_nan=False, allow_infinity=False)
             | st.text(st.characters(blacklist_categories=("Cs",)), max_size=40))
json_values = st.recursive(json_leaf, lambda c: st.lists(c, max_size=4)
                           | st.dictionaries(st.text(max_size=8), c, max_size=4), max_leaves=12)


@fuzz(400)
@given(specs())
def test_validate_never_raises_and_valid_specs_build(spec):
    problems = validate(spec)
    assert isinstance(problems, list)
    for p in problems:
        assert isinstance(p.path, str) and isinstance(p.message, str) and p.message
    json.dumps([p.as_dict() for p in problems], ensure_ascii=False)
    event("valid" if not problems else "invalid")
    if problems:
        return
    parsed = parse_valid(spec)
    graph = build.build_graph(parsed)
    graph.compile()


@fuzz(150)
@given(specs(max_nodes=8, local_only=True, break_it=False), st.text(max_size=50), json_values,
       st.dictionaries(st.sampled_from(["tier", "customer", "sub_queue", "x"]), json_values, max_size=3))
def test_valid_local_specs_run_to_an_end(spec, user_input, extra, metadata):
    problems = validate(spec)
    event("valid" if not problems else "invalid")
    assume(not problems)
    parsed = parse_valid(spec)
    state = state_from_input({"user_input": user_input, "metadata": metadata, "text_result": extra})
    try:
        final = invoke(parsed, state, RunContext())
    except GraphRecursionError:
        event("loop hit the recursion limit")
        return
    except StepFailed as exc:
        assert str(exc).startswith("node "), exc
        event("step failed")
        return
    json.dumps(final, default=str)
    assert final.get("user_input") == user_input


def test_ten_thousand_node_spec_validates_in_bounded_time_and_memory():
    spec = big_spec(10_000)
    tracemalloc.start()
    try:
        t0 = time.process_time()
        problems = validate(spec)
        elapsed = time.process_time() - t0
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert problems == []
    assert elapsed < 15, f"validating 10k nodes took {elapsed:.1f} s (under tracemalloc)"
    assert peak < 300 * 2**20, f"validating 10k nodes peaked at {peak / 2**20:.0f} MiB"


def _build_seconds(n: int) -> float:
    parsed = parse_valid(big_spec(n))
    t0 = time.process_time()
    build.build_graph(parsed)
    return time.process_time() - t0


@pytest.mark.timeout(180)
def test_building_scales_linearly_with_the_node_count():
    """Regression: build_graph scanned every edge for every node (quadratic): 10k nodes took
    14 s before LangGraph even compiled (1k -> 10k nodes cost 50x). 10x the nodes must cost
    about 10x."""
    _build_seconds(200)  # warm up
    small = min(_build_seconds(1000) for _ in range(2))
    large = _build_seconds(10_000)
    assert large / small < 25, f"1k nodes {small:.2f} s, 10k nodes {large:.2f} s"


def test_a_two_thousand_node_spec_builds_and_compiles():
    parsed = parse_valid(big_spec(2000))
    t0 = time.process_time()
    build.build_graph(parsed).compile()
    assert time.process_time() - t0 < 60


def test_ten_thousand_node_spec_with_problems_reports_them_fast():
    spec = big_spec(10_000)
    spec["edges"].append({"from": "n5", "to": "nowhere"})
    spec["nodes"][7]["config"] = {"fields": []}
    t0 = time.process_time()
    problems = validate(spec)
    assert time.process_time() - t0 < 10
    paths = {p.path for p in problems}
    assert any(p.startswith("edges[") for p in paths) and any(p.startswith("nodes[7]") for p in paths), paths


def _growing_loop(config_a: dict) -> dict:
    return {"id": "grow", "name": "grow", "start_node": "in",
            "nodes": [{"id": "in", "type": "input"},
                      {"id": "a", "type": "aggregator", "config": config_a},
                      {"id": "b", "type": "aggregator", "config": {"fields": ["out_a"], "output_key": "out_b"}},
                      {"id": "c", "type": "aggregator", "config": {"fields": ["user_input"]}}],
            "edges": [{"from": "in", "to": "a"}, {"from": "a", "to": "b"},
                      {"from": "b", "to": "a", "condition": "user_input != 'stop'"},
                      {"from": "b", "to": "c", "condition": "user_input == 'stop'"}]}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("config_a", [
    {"fields": ["out_a"], "template": "{out_a}{out_a}x", "output_key": "out_a"},  # a text that doubles
    {"fields": ["out_a", "out_b"], "output_key": "out_a"},                       # objects that nest (Fibonacci)
], ids=["template", "nested"])
def test_a_loop_that_grows_its_own_output_fails_readably_within_bounded_memory(config_a, monkeypatch):
    """Regression (found by test_valid_local_specs_run_to_an_end): such a loop is a valid spec;
    its output doubled on every turn until the 200-step limit, and the fuzz run was killed by
    the kernel at 24 GB. Every node's output is now capped (AGENTFLOW_MAX_STEP_OUTPUT_BYTES)."""
    from agentflow.graph import secrets

    monkeypatch.setattr(secrets, "_known", {"sk-known-secret-000"})  # redaction copies every output
    monkeypatch.setenv("AGENTFLOW_MAX_STEP_OUTPUT_BYTES", str(4 * 2**20))  # the default is 16 MB: same, slower
    spec = _growing_loop(config_a)
    assert validate(spec) == []
    tracemalloc.start()
    t0 = time.process_time()
    try:
        with pytest.raises(StepFailed) as info:
            invoke(parse_valid(spec), state_from_input({"user_input": "go"}), RunContext())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert str(info.value).startswith("node 'a' failed: its output is larger than 4 MB")
    assert time.process_time() - t0 < 30
    assert peak < 300 * 2**20, f"peak {peak / 2**20:.0f} MiB"


def test_the_output_cap_is_configurable_and_ordinary_outputs_pass(monkeypatch):
    from agentflow.graph.errors import StepError
    from agentflow.graph.nodes.base import check_output_size

    rows = [{"id": i, "customer": "acme", "item": "keyboard" * 3} for i in range(10_000)]
    check_output_size("db", {"db_result": rows})  # 10k rows: well under the default
    monkeypatch.setenv("AGENTFLOW_MAX_STEP_OUTPUT_BYTES", "1000")
    with pytest.raises(StepError, match="larger than"):
        check_output_size("db", {"db_result": rows})
    shared = ["x" * 100]
    for _ in range(40):  # 2**40 leaves if expanded: refused after walking about the limit
        shared = [shared, shared]
    t0 = time.process_time()
    with pytest.raises(StepError):
        check_output_size("n", {"v": shared}, limit=10_000)
    assert time.process_time() - t0 < 1
