"""Child runs of `workflow` and `map` nodes: in this process (embedded), or queued.

A child is a run row of its own (`parent_run_id`, `child_key` = the parent's step key and
the child's index), so it has its own steps, cost and trace, and the API lists it under
its parent. The children of one step run in parallel on a pool of their own (bounded by
AGENTFLOW_CHILD_RUN_WORKERS), made per call: a child that itself maps over a list gets
its own pool, so nested children never wait for threads their parents hold.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from ..graph.errors import StepError
from ..store.runs import TERMINAL, RunStore
from ..store.workflows import WorkflowStore

log = logging.getLogger(__name__)


def child_result(record: dict) -> dict[str, Any]:
    """What a workflow or map node reads of an ended child run (graph/runtime.py ChildRuns)."""
    state = record.get("state") or {}
    return {"run_id": record.get("run_id"), "status": record.get("status"),
            "final_output": state.get("final_output"), "error": record.get("error")}


def child_spec(workflows: WorkflowStore, tenant_id: str, workflow_id: str,
               version: int | None) -> tuple[dict, int]:
    """(spec, version) of the saved workflow a child runs: the pinned version or the latest."""
    if version is None:
        record = workflows.get(tenant_id, workflow_id)
        if record is None:
            raise StepError(f"workflow {workflow_id!r} does not exist (was it deleted?)")
        return record["spec"], record["version"]
    record = workflows.version(tenant_id, workflow_id, version)
    if record is None:
        raise StepError(f"workflow {workflow_id!r} has no version {version}")
    return record["spec"], version


class _ChildRunsBase:
    def __init__(self, store: RunStore):
        self.store = store
        self.workflows = WorkflowStore(store.factory)

    def _start(self, parent_run_id: str, step_key: str, workflow_id: str, version: int | None,
               inputs: list[dict]) -> list[str]:
        """Ids of the step's children in input order, made unless they exist: the saved
        workflow of the parent's tenant (a pinned version, or the latest)."""
        tenant = self.store.tenant_of(parent_run_id)
        if tenant is None:
            raise StepError(f"run {parent_run_id} not found")
        spec, number = child_spec(self.workflows, tenant, workflow_id, version)
        started = self.store.start_children(parent_run_id, step_key, workflow_id, number, spec, inputs)
        return [run_id for run_id, _ in started]


class EmbeddedChildRuns(_ChildRunsBase):
    """`execute(run_id) -> record` runs a stored run to its end (EmbeddedExecutor.execute)."""

    def __init__(self, store: RunStore, execute: Callable[[str], dict], workers: int = 8):
        super().__init__(store)
        self.execute = execute
        self.workers = max(1, workers)

    def run(self, parent_run_id: str, step_key: str, workflow_id: str, version: int | None,
            inputs: list[dict]) -> list[dict] | None:
        if not inputs:
            return []
        ids = self._start(parent_run_id, step_key, workflow_id, version, inputs)
        with ThreadPoolExecutor(max_workers=min(self.workers, len(ids)),
                                thread_name_prefix="agentflow-child") as pool:
            # a child that already ended (a parent step run again) is read, not run again
            records = list(pool.map(self._finish, ids))
        return [child_result(r) for r in records]

    def _finish(self, run_id: str) -> dict:
        try:
            record = self.execute(run_id)
        except Exception as exc:  # the executor records failing runs itself; this is a crash
            log.exception("child run %s crashed", run_id)
            return {"run_id": run_id, "status": "failed", "error": f"child run crashed: {type(exc).__name__}"}
        return record


class QueuedChildRuns(_ChildRunsBase):
    """ChildRuns for an executor that queues runs (distributed mode): `submit(run_id)` sends
    a child to the run queue. `run` starts the step's children (once: by step key and
    index), sends those still queued, and returns None until every child has ended, then
    their results; the parent then waits (ctx.wait) and is woken when `parent_to_wake`
    names it at a child's end. Sending a queued child again is harmless (a run's driver
    runs it once), and is what starts a child whose first send was lost."""

    def __init__(self, store: RunStore, submit: Callable[[str], Any]):
        super().__init__(store)
        self.submit = submit

    def run(self, parent_run_id: str, step_key: str, workflow_id: str, version: int | None,
            inputs: list[dict]) -> list[dict] | None:
        if not inputs:
            return []
        children = self.store.step_children(step_key)
        if len(children) < len(inputs):
            self._start(parent_run_id, step_key, workflow_id, version, inputs)
            children = self.store.step_children(step_key)
        for child in children:
            if child["status"] == "queued":
                self.submit(child["run_id"])
        if any(c["status"] not in TERMINAL for c in children):
            return None
        return [child_result(c) for c in children]


def parent_to_wake(store: RunStore, run_id: str) -> str | None:
    """At the end of run `run_id`: its parent's id when it is a child run and every child of
    the same parent step has now ended (the parent's node can read their results), else
    None. Two last children ending at once may both name the parent: waking is idempotent."""
    link = store.child_of(run_id)
    if link is None:
        return None
    parent, step_key = link
    if all(c["status"] in TERMINAL for c in store.step_children(step_key)):
        return parent
    return None
