"""input, router (rules mode), aggregator, and make_node's checks: no outside calls."""

from __future__ import annotations

import json

import pytest

from agentflow.graph.errors import StepError
from agentflow.graph import registry
from agentflow.graph.nodes import make_node
from agentflow.graph.spec import WorkflowSpec
from agentflow.graph.state import initial_state
from tests.fixtures_servers import make_spec, node_of

GPT = {"id": "gpt", "kind": "llm", "model": "gpt-4o-mini", "api_key_env": "OPENAI_API_KEY"}


def test_every_built_in_type_registers_through_its_entry_point():
    from importlib.metadata import entry_points

    from agentflow.graph.spec import NODE_TYPES, SOURCE_KINDS

    declared = {ep.name for ep in entry_points(group="agentflow.nodes") if ep.dist.metadata["Name"] == "agentflow"}
    assert declared == set(NODE_TYPES)
    reg = registry.get()
    assert list(reg.nodes)[:len(NODE_TYPES)] == list(NODE_TYPES)
    assert all(reg.nodes[t].origin.builtin for t in NODE_TYPES)
    assert list(reg.sources)[:len(SOURCE_KINDS)] == list(SOURCE_KINDS)
    assert reg.nodes["llm"].queue == "agentflow.llm" and reg.nodes["llm"].source_kind == "llm"


def test_triage_example_builds_every_node():
    with open("/work/shared/examples/triage.json") as fh:
        spec = WorkflowSpec.model_validate(json.load(fh))
    impls = {n.id: make_node(n, spec) for n in spec.nodes}
    assert {k for k, v in impls.items() if v.calls_outside} == {"router", "writer", "painter", "orders"}
    assert impls["router"].source.id == "gpt" and impls["input"].source is None
    state = initial_state("Hello there", {"customer": "alice"})
    prompt = "Answer the customer briefly.\n\nHello there"
    assert impls["writer"].estimate_tokens(state) == -(-len(prompt) // 4) + 200  # ceil(chars/4) + max_tokens
    assert impls["router"].estimate_tokens(state) > 256
    assert impls["orders"].estimate_tokens(state) == 0


def test_input_merges_defaults_under_run_metadata():
    impl = node_of(make_spec([{"id": "in", "type": "input",
                               "config": {"defaults": {"tier": "free", "lang": "en"}}}]))
    assert impl(initial_state("x", {"tier": "paid"}), None) == {"metadata": {"tier": "paid", "lang": "en"}}
    plain = node_of(make_spec([{"id": "in", "type": "input"}]))
    assert plain(initial_state("x"), None) == {}
    assert not plain.calls_outside


RULES = {"id": "r", "type": "router", "config": {
    "mode": "rules", "output_key": "intent",
    "rules": [{"condition": "metadata.tier == 'paid' and 'refund' in user_input", "value": "priority"},
              {"condition": "metadata.tier in ['paid', 'free']", "value": "normal"}]}}


def test_router_rules_first_match_wins_then_default():
    impl = node_of(make_spec([RULES]))
    assert not impl.calls_outside and impl.estimate_tokens({}) == 0
    assert impl(initial_state("a refund please", {"tier": "paid"}), None) == {"intent": "priority"}
    assert impl(initial_state("hello", {"tier": "paid"}), None) == {"intent": "normal"}
    with pytest.raises(StepError) as info:
        impl(initial_state("hello", {"tier": "vip"}), None)
    assert "router 'r': no rule matched and no default is set" in str(info.value)
    assert info.value.node_id == "r"

    with_default = json.loads(json.dumps(RULES))
    with_default["config"]["default"] = "other"
    with_default["config"]["output_key"] = "lane"
    assert node_of(make_spec([with_default]))(initial_state("x", {}), None) == {"lane": "other"}


def test_aggregator_collects_fields_and_dotted_paths():
    impl = node_of(make_spec([{"id": "agg", "type": "aggregator",
                               "config": {"fields": ["intent", "text_result", "metadata.customer", "missing"]}}]))
    state = {**initial_state("x", {"customer": "alice"}), "intent": "text", "text_result": "hi"}
    assert impl(state, None) == {"final_output": {"intent": "text", "text_result": "hi",
                                                  "metadata.customer": "alice", "missing": None}}


def test_aggregator_template():
    impl = node_of(make_spec([{"id": "agg", "type": "aggregator", "config": {
        "fields": ["text_result"], "output_key": "summary",
        "template": "{metadata.customer}: {text_result} {{literal}} {db_result}"}}]))
    state = {**initial_state("x", {"customer": "bob"}), "text_result": "done", "db_result": [{"id": 1}]}
    assert impl(state, None) == {"summary": 'bob: done {literal} [{"id": 1}]'}


def test_nodes_needing_a_source_say_so():
    with pytest.raises(StepError, match="node 'w' needs a source of kind 'llm'"):
        node_of(make_spec([{"id": "w", "type": "llm", "config": {"prompt": "x"}}]))
    with pytest.raises(StepError, match="source 'nope' is not defined"):
        node_of(make_spec([{"id": "w", "type": "llm", "source": "nope", "config": {"prompt": "x"}}]))
    with pytest.raises(StepError, match="'gpt' is of kind 'llm'"):
        node_of(make_spec([{"id": "p", "type": "image", "source": "gpt", "config": {"prompt": "x"}}], [GPT]))
    with pytest.raises(StepError, match="needs at least one label"):
        node_of(make_spec([{"id": "r", "type": "router", "source": "gpt", "config": {"mode": "llm"}}], [GPT]))


def test_retry_and_timeout_precedence():
    src = {**GPT, "max_retries": 1, "timeout_seconds": 20}
    node = {"id": "w", "type": "llm", "source": "gpt", "config": {"prompt": "x"}}
    impl = node_of(make_spec([node], [src]))
    assert (impl.max_retries, impl.timeout) == (1, 20)
    node["config"].update(max_retries=0, timeout_seconds=2.5)
    impl = node_of(make_spec([node], [src]))
    assert (impl.max_retries, impl.timeout) == (0, 2.5)
    impl = node_of(make_spec([{"id": "w", "type": "llm", "source": "gpt", "config": {"prompt": "x"}}], [GPT]))
    assert (impl.max_retries, impl.timeout) == (3, 60)
