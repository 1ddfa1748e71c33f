"""The node-type registry with plugin distributions installed in this process: validation
with paths, the JSON Schema, running embedded (recorded, limited, scrubbed), and plugins
that are broken or clash with a built-in."""

from __future__ import annotations

import pytest

from agentflow.graph import registry
from agentflow.graph.spec import NODE_TYPES, workflow_json_schema
from agentflow.graph.validate import validate
from tests.plugins.fakes import FakePlugins

GOOD = """
from pydantic import BaseModel, ConfigDict, Field

class ShoutConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(description="Template over the state.")
    times: int = Field(1, ge=1, le=5)
    output_key: str = "shout"

class Shout:
    config_model = ShoutConfig
    description = "Upper-cases a text"
    queue = "agentflow.shout"

    @staticmethod
    def run(config, state):
        from agentflow.graph.templates import render
        return {config.output_key: " ".join([render(config.text, state).upper()] * config.times)}

class Leak:
    config_model = ShoutConfig

    @staticmethod
    def run(config, state):
        return {config.output_key: "key is " + state["metadata"]["key"], "elsewhere": 1}

class LeakOk:
    config_model = ShoutConfig

    @staticmethod
    def run(config, state):
        return {config.output_key: "key is " + state["metadata"]["key"]}

class NotAPlugin:
    pass

class Ticket:
    config_model = ShoutConfig
    description = "A ticket system"

SHOUT, LEAK, LEAK_OK, NOT_A_PLUGIN = Shout(), Leak(), LeakOk(), NotAPlugin()
SNEAKY = Shout()
TICKET = Ticket()
"""


@pytest.fixture
def plugins(tmp_path):
    fake = FakePlugins()
    fake.add(tmp_path / "good", name="af-shout", version="1.2.3", modules={"af_shout": GOOD},
             nodes={"shout": "af_shout:SHOUT", "leak": "af_shout:LEAK", "leak_ok": "af_shout:LEAK_OK",
                    "not_a_plugin": "af_shout:NOT_A_PLUGIN", "llm": "af_shout:SNEAKY"},
             sources={"ticket": "af_shout:TICKET"})
    fake.add(tmp_path / "bad", name="af-broken", version="0.0.1",
             modules={"af_broken": "raise RuntimeError('broken on purpose')\n"},
             nodes={"broken": "af_broken:NODE"})
    fake.reload()
    yield fake
    fake.close()


def spec(*nodes, **extra):
    ids = ["start", *[n["id"] for n in nodes]]
    return {"id": "p", "name": "plugin test", "start_node": "start",
            "nodes": [{"id": "start", "type": "input"}, *nodes],
            "edges": [{"from": a, "to": b} for a, b in zip(ids, ids[1:])], **extra}


def test_plugins_are_registered_after_the_builtins_and_failures_are_listed(plugins):
    reg = registry.get()
    assert list(reg.nodes)[:len(NODE_TYPES)] == list(NODE_TYPES)
    assert {"shout", "leak", "leak_ok"} <= set(reg.nodes) and "broken" not in reg.nodes
    shout = reg.nodes["shout"]
    assert (shout.queue, shout.description, shout.origin.as_dict()) == (
        "agentflow.shout", "Upper-cases a text", {"kind": "plugin", "package": "af-shout", "version": "1.2.3"})
    assert reg.nodes["leak"].queue == registry.DEFAULT_QUEUE
    assert reg.nodes["llm"].origin.builtin  # a plugin cannot take over a built-in type
    errors = {e.name: e for e in reg.errors}
    assert set(errors) == {"broken", "not_a_plugin", "llm"}
    assert errors["broken"].error == "RuntimeError: broken on purpose" and errors["broken"].package == "af-broken"
    assert "config_model" in errors["not_a_plugin"].error
    assert "already defined by agentflow" in errors["llm"].error
    assert "ticket" in reg.sources
    listed = {p["package"]: p for p in reg.plugins()}
    assert listed["af-shout"]["node_types"] == ["leak", "leak_ok", "shout"]
    assert listed["af-shout"]["source_kinds"] == ["ticket"]
    assert [e["name"] for e in listed["af-broken"]["errors"]] == ["broken"]


def test_a_plugin_node_validates_with_paths_like_a_builtin(plugins):
    good = spec({"id": "s", "type": "shout", "config": {"text": "{user_input}", "times": 2}})
    assert validate(good) == []
    bad = spec({"id": "s", "type": "shout", "config": {"times": 9, "colour": "red", "text": "{nowhere}"}},
               {"id": "t", "type": "shoot", "config": {}})
    problems = {p.path: p.message for p in validate(bad)}
    assert problems["nodes[1].config.times"].startswith("Input should be less than or equal to 5")
    assert problems["nodes[1].config.colour"] == "unknown field"
    assert "'shoot'" in problems["nodes[2]"] and "'shout'" in problems["nodes[2]"]  # the expected tags
    # templates of a plugin's config are checked too (its `text` is no known template field name,
    # but a source on a node type that takes none is)
    sourced = spec({"id": "s", "type": "shout", "source": "x", "config": {"text": "a"}},
                   sources=[{"id": "x", "kind": "ticket", "text": "t"}])
    assert [p.path for p in validate(sourced)] == ["nodes[1].source"]


def test_the_schema_lists_plugin_types_and_source_kinds(plugins):
    schema = workflow_json_schema()
    mapping = schema["properties"]["nodes"]["items"]["discriminator"]["mapping"]
    by_ref = {ref: t for t, ref in mapping.items()}
    order = [by_ref[s["$ref"]] for s in schema["properties"]["nodes"]["items"]["oneOf"]]
    assert order[:len(NODE_TYPES)] == list(NODE_TYPES) and set(order[len(NODE_TYPES):]) == {"shout", "leak", "leak_ok"}
    assert mapping["shout"] == "#/$defs/ShoutNode" and "broken" not in mapping
    node = schema["$defs"]["ShoutNode"]
    assert node["properties"]["type"]["const"] == "shout" and "config" in node["required"]
    assert schema["$defs"]["ShoutConfig"]["properties"]["times"]["maximum"] == 5
    assert schema["properties"]["sources"]["items"]["discriminator"]["mapping"]["ticket"] == "#/$defs/TicketSource"


def test_plugin_steps_run_embedded_recorded_limited_and_scrubbed(plugins, af_home, monkeypatch):
    from agentflow.graph.secrets import REDACTED, remember
    from agentflow.ratelimit.factory import memory_limiter
    from agentflow.runs.embedded import EmbeddedExecutor
    from agentflow.store.db import migrate, session_factory
    from agentflow.store.runs import RunStore

    url = f"sqlite:///{af_home}/runs.db"
    af_home.mkdir(parents=True, exist_ok=True)
    migrate(url)
    executor = EmbeddedExecutor(RunStore(session_factory(url)), limiter=memory_limiter())
    try:
        data = spec({"id": "s", "type": "shout", "queue": "slow", "config": {"text": "hi {metadata.who}", "times": 2}},
                    {"id": "l", "type": "leak_ok", "config": {"text": "x", "output_key": "leaked"}},
                    queues=[{"id": "slow", "max_messages_per_second": 1, "burst_size": 1}])
        secret = "sk-plugin-canary-0123456789"
        remember(secret)  # as reading it through a source would
        rid = executor.store.create(data, {"user_input": "", "metadata": {"who": "ann", "key": secret}}, workflow_id="p")
        record = executor.execute(rid)
        assert record["status"] == "succeeded", record.get("error")
        assert record["state"]["shout"] == "HI ANN HI ANN"
        assert record["state"]["leaked"] == f"key is {REDACTED}"  # scrubbed like any step's output
        steps = {s["node_id"]: s for s in record["steps"]}
        assert steps["s"]["node_type"] == "shout" and steps["s"]["status"] == "succeeded"

        # the queue's limit holds for plugin steps too: 1 message a second, burst 1
        import time

        started = time.monotonic()
        for _ in range(3):
            rid = executor.store.create(data, {"user_input": "", "metadata": {"who": "bo", "key": "k"}},
                                        workflow_id="p")
            assert executor.execute(rid)["status"] == "succeeded"
        # 1 a second: the first of these waits for whatever of the second the last run left, each next one 1 s
        assert time.monotonic() - started >= 1.8

        # a plugin may only write state fields and its output_key
        bad = spec({"id": "l", "type": "leak", "config": {"text": "x"}})
        rid = executor.store.create(bad, {"user_input": "", "metadata": {"key": "k"}}, workflow_id="p2")
        failed = executor.execute(rid)
        assert failed["status"] == "failed" and "wrote ['elsewhere']" in failed["error"]
    finally:
        executor.shutdown()


def test_an_install_without_our_entry_points_still_has_the_builtins(monkeypatch, caplog):
    # metadata from before the entry points existed (`pip install -e .` not re-run): the
    # same registration objects are taken directly, and the log says to reinstall
    from importlib import metadata

    real = metadata.entry_points
    monkeypatch.setattr(registry.metadata, "entry_points",
                        lambda group: [ep for ep in real(group=group) if ep.dist.metadata["Name"] != "agentflow"])
    try:
        reg = registry.reload()
        assert list(reg.nodes) == list(NODE_TYPES) and all(t.origin.builtin for t in reg.nodes.values())
        assert reg.nodes["db"].queue == "agentflow.db" and not reg.errors
        assert "re-run `pip install -e .`" in caplog.text
    finally:
        monkeypatch.undo()
        registry.reload()
