"""The `People` of graph/runtime.py on the run store: a human node's question and answer
are a step row (status `waiting`, then `succeeded` with the answer as its output)."""

from __future__ import annotations

from typing import Callable

from ..store.runs import RunStore
from .observer import RunCancelled


class StorePeople:
    def __init__(self, store: RunStore, bus, wake_at: Callable[[str, float], None] | None = None):
        self.store, self.bus = store, bus
        self.wake_at = wake_at  # wakes the run at a deadline: a delayed message, or a timer when embedded

    def answer_of(self, step_key: str) -> dict | None:
        return self.store.finished_step_output(step_key)

    def ask(self, run_id: str, node_id: str, step_key: str, state: dict, deadline_s: float | None) -> float:
        began = self.store.open_wait(run_id, node_id, "human", step_key, input=dict(state))
        if began is None:
            raise RunCancelled("run was cancelled")
        at = began.timestamp()
        if deadline_s is not None and self.wake_at is not None:
            self.wake_at(run_id, at + deadline_s)
        return at

    def answer(self, run_id: str, step_key: str, output: dict) -> dict | None:
        step = self.store.answer(step_key, output)
        if step is not None:
            self.bus.publish(run_id, "step", step)
        return step
