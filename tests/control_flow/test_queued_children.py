"""QueuedChildRuns and parent_to_wake: the distributed mode's child runs, on a real store.

The run queue is a list here (what `submit` was asked to send); the children's ends are
written the way an executor writes them (RunStore.finish)."""

from __future__ import annotations

import pytest

from agentflow.graph.errors import StepError
from agentflow.graph.spec import WorkflowSpec
from agentflow.runs.children import QueuedChildRuns, parent_to_wake
from agentflow.store.db import migrate, session_factory
from agentflow.store.runs import RunStore
from agentflow.store.workflows import WorkflowStore

from .specs import child, mapper


@pytest.fixture
def store(tmp_path):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    migrate(url)
    factory = session_factory(url)
    WorkflowStore(factory).save("default", WorkflowSpec.model_validate(child()))
    return RunStore(factory)


def test_children_are_started_once_and_read_when_all_ended(store):
    sent: list[str] = []
    children = QueuedChildRuns(store, sent.append)
    parent = store.create(mapper(), {"user_input": ""}, workflow_id="cf-map")
    key = f"{parent}:each:1"
    inputs = [{"user_input": str(i)} for i in range(3)]

    assert children.run(parent, key, "cf-child", None, inputs) is None
    kids = store.step_children(key)
    assert [k["index"] for k in kids] == [0, 1, 2] and sent == [k["run_id"] for k in kids]
    assert {c["run_id"] for c in store.children(parent)} == set(sent)

    # woken early (or resumed): nothing made again; the still queued ones are sent again
    store.begin(kids[0]["run_id"])
    assert children.run(parent, key, "cf-child", None, inputs) is None
    assert len(store.step_children(key)) == 3
    assert sent[3:] == [kids[1]["run_id"], kids[2]["run_id"]]

    store.finish(kids[2]["run_id"], "succeeded", state={"final_output": "two"})
    assert parent_to_wake(store, kids[2]["run_id"]) is None  # siblings still run
    store.finish(kids[0]["run_id"], "failed", error="boom")
    store.begin(kids[1]["run_id"])
    store.finish(kids[1]["run_id"], "succeeded", state={"final_output": "one"})
    assert parent_to_wake(store, kids[1]["run_id"]) == parent  # the last one wakes the parent
    results = children.run(parent, key, "cf-child", None, inputs)
    assert results == [
        {"run_id": kids[0]["run_id"], "status": "failed", "final_output": None, "error": "boom"},
        {"run_id": kids[1]["run_id"], "status": "succeeded", "final_output": "one", "error": None},
        {"run_id": kids[2]["run_id"], "status": "succeeded", "final_output": "two", "error": None},
    ]
    assert parent_to_wake(store, parent) is None  # not a child run


def test_step_keys_do_not_overlap_and_missing_workflows_fail(store):
    sent: list[str] = []
    children = QueuedChildRuns(store, sent.append)
    parent = store.create(mapper(), {"user_input": ""}, workflow_id="cf-map")
    # a node id with '_' (a LIKE wildcard) and one step key a prefix of another
    children.run(parent, f"{parent}:a_b:1", "cf-child", None, [{"user_input": "x"}])
    children.run(parent, f"{parent}:a_b:12", "cf-child", None, [{"user_input": "y"}, {"user_input": "z"}])
    assert len(store.step_children(f"{parent}:a_b:1")) == 1
    assert len(store.step_children(f"{parent}:a_b:12")) == 2
    with pytest.raises(StepError, match="workflow 'gone' does not exist"):
        children.run(parent, f"{parent}:x:1", "gone", None, [{"user_input": "x"}])
    with pytest.raises(StepError, match="workflow 'cf-child' has no version 9"):
        children.run(parent, f"{parent}:x:1", "cf-child", 9, [{"user_input": "x"}])
