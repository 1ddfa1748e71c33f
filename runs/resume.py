"""Answering a run that waits for a person: one rule set for the API, the CLI and the SDK."""

from __future__ import annotations

from ..graph.spec import WorkflowSpec
from ..store.runs import RunStore, public_waits


class ResumeRefused(Exception):
    """Why an answer was not taken; `status` is the HTTP code the API answers with."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def answer_run(store: RunStore, run_id: str, node: str, choice: str, values: dict | None = None,
               by: str | None = None, tenant_id: str | None = None) -> dict:
    """Record a person's answer to a waiting run's `human` node; returns the answered step.
    The caller then wakes the run. 404: no such run (of this tenant); 409: the run is not
    waiting, or this question was answered already; 422: a wrong node or choice."""
    record = store.get(run_id, tenant_id=tenant_id, with_steps=False)
    if record is None:
        raise ResumeRefused(404, f"run {run_id} not found")
    status, waits = store.waits_of(run_id)
    if status != "waiting":
        raise ResumeRefused(409, f"run {run_id} is {status}, not waiting for an answer")
    wait = next((w for w in waits if w.get("kind") == "human" and w.get("node") == node), None)
    if wait is None:
        asked = ", ".join(w["node"] for w in public_waits(waits)) or "none"
        raise ResumeRefused(422, f"node {node!r} is not waiting for an answer (waiting: {asked})")
    if choice not in (wait.get("choices") or []):
        raise ResumeRefused(422, f"{choice!r} is not one of the choices {wait.get('choices')}")
    loaded = store.spec_of(run_id)
    spec = WorkflowSpec.model_validate(loaded[0])
    output_key = spec.node(node).config.output_key
    step = store.answer(wait["key"], {output_key: {"choice": choice, "values": dict(values or {}), "by": by}})
    if step is None:
        raise ResumeRefused(409, f"node {node!r} of run {run_id} was answered already")
    return step
