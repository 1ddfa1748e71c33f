"""The run store's hot path (one statement per step start/end, one query per step check)
keeps the semantics the executors rely on, on SQLite and on Postgres."""

from __future__ import annotations

import pytest

from tests.needs import need_postgres


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, tmp_path):
    from agentflow.store.db import get_engine, migrate, session_factory
    from agentflow.store.runs import RunStore

    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'runs.db'}"
        migrate(url)
        yield RunStore(session_factory(url))
        get_engine(url).dispose()
        return
    need_postgres()
    from tests.databases import fresh_database

    with fresh_database() as url:
        migrate(url)
        yield RunStore(session_factory(url))
        get_engine(url).dispose()


SPEC = {"id": "wf", "name": "wf", "start_node": "a", "nodes": [{"id": "a", "type": "input"}], "edges": []}


def test_begin_returns_what_the_executor_needs_once_per_live_run(store):
    run_id = store.create(SPEC, {"user_input": "hi"}, workflow_id="wf", tenant_id="t1", options={"stream": True},
                          rerun_from="a")
    begun = store.begin(run_id)
    started = begun.pop("started_at")
    assert begun == {"spec": SPEC, "input": {"user_input": "hi"}, "options": {"stream": True}, "rerun_from": "a",
                     "tenant_id": "t1", "attempts": 1}
    assert store.status(run_id) == "running" and started is not None
    again = store.begin(run_id)
    assert again["attempts"] == 2  # a redelivered driver resumes a running run
    assert again["started_at"] == started  # a run's start is its first advance's, however many follow
    store.finish(run_id, "succeeded", state={"tokens_used": 0})
    assert store.begin(run_id) is None and store.status(run_id) == "succeeded"
    assert store.begin("no-such-run") is None


def test_a_cut_off_driver_does_not_record_its_pause_over_a_newer_drivers(store):
    run_id = store.create(SPEC, {"user_input": "hi"}, workflow_id="wf")
    old = store.begin(run_id)["attempts"]
    new = store.begin(run_id)["attempts"]  # a second driver took the run over
    person = [{"kind": "human", "node": "a", "key": "k-old", "prompt": "old"}]
    assert store.wait(run_id, person, attempts=old) is False
    assert store.status(run_id) == "running" and store.get(run_id)["waiting_for"] == []
    assert store.wait(run_id, person, attempts=new) is True
    assert store.status(run_id) == "waiting"
    assert store.get(run_id)["waiting_for"] == [{"node": "a", "prompt": "old", "choices": []}]


def test_steps_start_and_end_by_id_with_tenant_attempts_and_cancellation(store):
    run_id = store.create(SPEC, {"user_input": "hi"}, tenant_id="t2")
    key = f"{run_id}:b:1"
    assert store.step_check(run_id, key) == ("queued", None)
    step_id, step = store.start_step(run_id, "b", "llm", queue="agentflow.llm", worker="w1", step_key=key,
                                     input={"user_input": "hi"}, unless_cancelled=True)
    assert step["status"] == "running" and step["attempt"] == 1 and step["queue"] == "agentflow.llm"
    assert step["started_at"] and step["finished_at"] is None
    # a redelivery of the same step closes the unfinished attempt as lost and counts on
    step_id2, step2 = store.start_step(run_id, "b", "llm", step_key=key)
    assert step2["attempt"] == 2
    assert store.end_step(step_id, status="succeeded", duration_ms=1.0) is None  # it was closed as lost
    ended = store.end_step(step_id2, status="succeeded", duration_ms=2.5, tokens=7, cost=0.01,
                           output={"draft": "ok"})
    assert ended["status"] == "succeeded" and ended["tokens"] == 7 and ended["finished_at"]
    assert store.step_check(run_id, key) == ("queued", {"draft": "ok"})
    steps = store.get(run_id)["steps"]
    assert [(s["attempt"], s["status"]) for s in steps] == [(1, "lost"), (2, "succeeded")]
    from agentflow.store.db import session_scope
    from agentflow.store.models import Step

    with session_scope(store.factory) as s:
        assert {x.tenant_id for x in s.query(Step).filter(Step.run_id == run_id)} == {"t2"}
    store.cancel(run_id)
    assert store.start_step(run_id, "c", "llm", unless_cancelled=True) is None
    assert store.step_check(run_id, f"{run_id}:c:2") == ("cancelled", None)
    assert store.step_check("no-such-run", key) == (None, None)


def test_a_late_result_and_a_new_attempt_of_the_step_exactly_one_wins(store):
    """The fence between a worker that was cut off and the one that took its step over
    (docs/scaling.md): whichever of the late result and the new attempt comes first wins."""
    from agentflow.store.runs import StepDone

    run_id = store.create(SPEC, {"user_input": "hi"})
    # the new attempt first: the late worker's attempt is closed as lost, its result discarded
    key = f"{run_id}:b:1"
    late, _ = store.start_step(run_id, "b", "llm", worker="hostA", step_key=key, unless_done=True)
    new, step = store.start_step(run_id, "b", "llm", worker="hostB", step_key=key, unless_done=True)
    assert step["attempt"] == 2
    assert not store.attempt_running(late) and store.attempt_running(new)
    assert store.end_step(late, status="succeeded", duration_ms=1.0, output={"draft": "late"}) is None
    assert store.end_step(new, status="succeeded", duration_ms=1.0, output={"draft": "new"})["status"] == "succeeded"
    assert store.step_outcome(run_id, key)[1:3] == ("succeeded", {"draft": "new"})
    # the late result first: the new attempt stops before it starts (nothing is called twice)
    key = f"{run_id}:c:2"
    late, _ = store.start_step(run_id, "c", "llm", worker="hostA", step_key=key, unless_done=True)
    assert store.end_step(late, status="succeeded", duration_ms=1.0, output={"c": 1})["status"] == "succeeded"
    with pytest.raises(StepDone):
        store.start_step(run_id, "c", "llm", worker="hostB", step_key=key, unless_done=True)
    assert [(s["node_id"], s["status"]) for s in store.get(run_id)["steps"]] == [
        ("b", "lost"), ("b", "succeeded"), ("c", "succeeded")]


def test_a_step_that_failed_is_not_tried_again_by_a_second_message(store):
    """A copy of a step's message sent again after Redis lost its sent-marker skips the outcome
    look-up (it is a first message to the driver): the start-step fence stops it, so a failed
    step is not paid twice and the run still fails with the first attempt's error."""
    from agentflow.store.runs import StepDone

    run_id = store.create(SPEC, {"user_input": "hi"})
    key = f"{run_id}:b:1"
    first, _ = store.start_step(run_id, "b", "llm", step_key=key, unless_done=True)
    store.end_step(first, status="failed", duration_ms=1.0, error="provider said 400")
    with pytest.raises(StepDone):
        store.start_step(run_id, "b", "llm", step_key=key, unless_done=True)
    assert store.step_outcome(run_id, key)[1:] == ("failed", None, "provider said 400")
    assert [(s["node_id"], s["status"]) for s in store.get(run_id)["steps"]] == [("b", "failed")]


@pytest.mark.parametrize("store", ["postgres"], indirect=True)  # SQLite has one writer at a time: no race
def test_the_fence_holds_when_the_late_result_commits_while_the_new_attempt_waits(store):
    """The race itself, on Postgres: the late worker's UPDATE holds the row when the new
    attempt tries to close it as lost; once the late result commits, the new attempt sees it."""
    import threading

    from sqlalchemy import text

    from agentflow.store.runs import StepDone

    run_id = store.create(SPEC, {"user_input": "hi"})
    key = f"{run_id}:b:1"
    late, _ = store.start_step(run_id, "b", "llm", worker="hostA", step_key=key, unless_done=True)
    outcome: list = []
    with store.engine.connect() as conn:
        tx = conn.begin()
        conn.execute(text("UPDATE steps SET status = 'succeeded' WHERE id = :id AND status = 'running'"), {"id": late})

        def new_attempt() -> None:
            try:
                outcome.append(store.start_step(run_id, "b", "llm", worker="hostB", step_key=key, unless_done=True))
            except StepDone as exc:
                outcome.append(exc)

        t = threading.Thread(target=new_attempt)
        t.start()
        t.join(1.0)
        assert t.is_alive(), "the new attempt did not wait for the row the late result holds"
        tx.commit()
    t.join(10)
    assert len(outcome) == 1 and isinstance(outcome[0], StepDone), outcome
    assert [s["status"] for s in store.get(run_id)["steps"]] == ["succeeded"]


def test_a_step_without_key_is_written_in_one_statement_with_the_runs_tenant_and_its_input(store):
    from agentflow.store.db import session_scope
    from agentflow.store.models import Step

    run_id = store.create(SPEC, {"user_input": "hi"}, tenant_id="t3")
    step_id, step = store.start_step(run_id, "a", "input", queue="runs", input={"user_input": "hi", "n": [1, 2]},
                                     unless_cancelled=True)
    assert step["status"] == "running" and step["queue"] == "runs" and step["attempt"] == 1
    with session_scope(store.factory) as s:
        row = s.get(Step, step_id)
        assert (row.tenant_id, row.input, row.node_type) == ("t3", {"user_input": "hi", "n": [1, 2]}, "input")
    assert store.end_step(step_id, status="succeeded", duration_ms=1.0)["status"] == "succeeded"
    store.cancel(run_id)
    assert store.start_step(run_id, "b", "aggregator", unless_cancelled=True) is None
    assert [s["node_id"] for s in store.get(run_id)["steps"]] == ["a"]


def test_a_deleted_run_starts_no_step_as_if_it_were_cancelled(store):
    """A run row deleted under a node task (or a driver): every way of starting a step
    returns None, which the observer turns into RunCancelled, instead of a foreign-key error."""
    from sqlalchemy import text

    run_id = store.create(SPEC, {"user_input": "hi"}, tenant_id="t4")
    key = f"{run_id}:b:1"
    store.start_step(run_id, "b", "llm", step_key=key)  # an earlier attempt: the two-step path next
    with store.factory() as s:
        s.execute(text("DELETE FROM runs WHERE id = :id"), {"id": run_id})
        s.commit()
    assert store.start_step(run_id, "b", "llm", step_key=key, unless_cancelled=True, unless_done=True) is None
    assert store.start_step(run_id, "c", "llm", step_key=f"{run_id}:c:1", unless_cancelled=True) is None
    assert store.start_step(run_id, "a", "input", unless_cancelled=True) is None
    assert store.start_step(run_id, "d", "llm", step_key=f"{run_id}:d:1") is None  # a failure recorded
    assert store.start_step(run_id, "d", "llm", tenant_id="t4") is None
    with store.factory() as s:
        assert s.execute(text("SELECT count(*) FROM steps WHERE run_id = :id"), {"id": run_id}).scalar() == 0


def test_step_ended_without_an_id_closes_the_newest_running_step_of_the_node(store):
    run_id = store.create(SPEC, {"user_input": "hi"})
    store.step_started(run_id, "a", "input")
    ended = store.step_ended(run_id, "a", status="failed", duration_ms=3.0, error="boom")
    assert ended["status"] == "failed" and ended["error"] == "boom"
    assert store.step_ended(run_id, "a", status="succeeded", duration_ms=1.0) is None


def test_a_run_of_a_saved_workflow_copies_its_current_version_inside_the_database(store):
    from agentflow.graph.validate import parse_valid
    from agentflow.store.workflows import WorkflowStore

    workflows = WorkflowStore(store.factory)
    workflows.save("t1", parse_valid(SPEC))
    v2 = {**SPEC, "name": "second"}
    workflows.save("t1", parse_valid(v2))
    created = store.create_from_workflow("t1", "wf", {"user_input": "hi"}, options={"stream": True})
    assert created is not None and created[1] == 2
    begun = store.begin(created[0])
    assert begun["spec"]["name"] == "second" and begun["tenant_id"] == "t1"
    assert begun["input"] == {"user_input": "hi"} and begun["options"] == {"stream": True}
    record = store.get(created[0], "t1")
    assert (record["workflow_id"], record["workflow_version"], record["attempts"]) == ("wf", 2, 1)
    assert record["created_at"] is not None
    assert store.create_from_workflow("t2", "wf", {}) is None  # another tenant's workflow: not found
    assert store.create_from_workflow("t1", "nope", {}) is None


def test_a_run_start_and_its_audit_entry_are_written_together(store):
    from agentflow.graph.validate import parse_valid
    from agentflow.store.audit import AuditStore, audit_row
    from agentflow.store.workflows import WorkflowStore

    WorkflowStore(store.factory).save("t1", parse_valid(SPEC))
    audit = AuditStore(store.factory)
    row = audit_row("t1", subject="ed@t1", role="editor", action="run.start", target_type="run", ip="10.0.0.9",
                    detail={"method": "POST", "path": "/workflows/wf/runs", "status": 202})
    run_id, version = store.create_from_workflow("t1", "wf", {"user_input": "hi"}, audit=row)
    (entry,), _ = audit.list("t1", target_id=run_id)
    assert (entry["action"], entry["subject"], entry["role"], entry["ip"]) == ("run.start", "ed@t1", "editor", "10.0.0.9")
    assert entry["target_type"] == "run" and entry["detail"]["status"] == 202 and entry["at"] is not None
    # no workflow, no run and no entry
    assert store.create_from_workflow("t1", "nope", {}, audit=row) is None
    assert len(audit.list("t1")[0]) == 1
    audit.amend_status("t1", "run.start", run_id, 503, "could not be queued: broker down")
    (entry,), _ = audit.list("t1", target_id=run_id)
    assert entry["detail"]["status"] == 503 and entry["detail"]["path"] == "/workflows/wf/runs"
    assert entry["detail"]["error"] == "could not be queued: broker down"


class _Bus:
    def __init__(self):
        self.events = []

    def publish(self, run_id, kind, payload):
        self.events.append((kind, dict(payload)))


def test_an_instant_step_is_one_row_written_when_it_ends(store):
    """input and aggregator steps: the running phase is published, the row is written once,
    complete; a cancelled run gets none and the step raises RunCancelled; a key that has a row
    already (an earlier attempt) takes the two-step path and counts its attempt."""
    from agentflow.runs.observer import RecordingObserver, RunCancelled
    from agentflow.store.models import Step

    bus = _Bus()
    run_id = store.create(SPEC, {"user_input": "hi"}, tenant_id="t3")
    obs = RecordingObserver(store, bus, queue_of=lambda _n: "runs", worker="w1")
    obs.step_started(run_id, "a", "input", 1, input={"user_input": "hi"}, step_key=f"{run_id}:a:1")
    with store.factory() as s:
        assert s.query(Step).filter_by(run_id=run_id).count() == 0  # nothing written while it runs
    obs.step_finished(run_id, "a", update={"x": 1}, tokens=0, cost=0.0, duration_ms=0.2)
    (step,) = store.get(run_id)["steps"]
    assert step["status"] == "succeeded" and step["node_type"] == "input" and step["queue"] == "runs"
    assert step["started_at"] and step["finished_at"] and step["worker"] == "w1"
    with store.factory() as s:
        row = s.query(Step).filter_by(run_id=run_id).one()
        assert row.tenant_id == "t3" and row.output == {"x": 1} and row.input == {"user_input": "hi"}
        assert row.step_key == f"{run_id}:a:1"
    assert [(k, e["status"]) for k, e in bus.events] == [("step", "running"), ("step", "succeeded")]

    # an earlier attempt of the same key left a row: this one is attempt 2, through start/end
    obs.step_started(run_id, "a", "input", 1, step_key=f"{run_id}:a:1")
    obs.step_failed(run_id, "a", error="boom", duration_ms=0.1)
    attempts = sorted((s["attempt"], s["status"]) for s in store.get(run_id)["steps"])
    assert attempts == [(1, "succeeded"), (2, "failed")]

    store.cancel(run_id)
    obs.step_started(run_id, "d", "aggregator", 1)
    with pytest.raises(RunCancelled):
        obs.step_finished(run_id, "d", update={}, tokens=0, cost=0.0, duration_ms=0.1)
    assert [s["node_id"] for s in store.get(run_id)["steps"]] == ["a", "a"]


def test_finish_and_get_returns_what_get_shows_and_never_reopens_an_ended_run(store):
    run_id = store.create(SPEC, {"user_input": "hi"}, tenant_id="t4")
    store.begin(run_id)
    obs_step = store.start_step(run_id, "b", "llm")
    store.end_step(obs_step[0], status="succeeded", duration_ms=1.0, output={"x": 1})
    record = store.finish_and_get(run_id, "succeeded", state={"answer": 42, "tokens_used": 3})
    assert record == store.get(run_id)
    assert record["status"] == "succeeded" and record["state"]["answer"] == 42 and record["tokens_used"] == 3
    assert [s["node_id"] for s in record["steps"]] == ["b"]
    # ended already (a cancel raced the driver): the stored run is read back unchanged
    again = store.finish_and_get(run_id, "failed", error="late")
    assert again == record and again["error"] is None
    assert store.finish_and_get("no-such-run", "failed", error="x") is None


def test_what_a_run_writes_on_its_way_is_retried_on_a_dropped_connection_once():
    """Each write the driver and node tasks make is wrapped in retry_on_disconnect exactly
    once (twice would try nine times; none would fail the step on a database blip)."""
    from agentflow.store.runs import RunStore

    for name in ("begin", "wait", "finish", "finish_and_get", "start_step", "end_step", "record_step",
                 "step_outcome", "step_check"):
        method = getattr(RunStore, name)
        assert hasattr(method, "__wrapped__"), f"RunStore.{name} is not retried on a dropped connection"
        assert not hasattr(method.__wrapped__, "__wrapped__"), f"RunStore.{name} is wrapped twice"
