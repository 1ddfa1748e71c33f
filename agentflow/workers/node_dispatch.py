"""Sends a node's work to its type's queue and waits for the result (run-driver side).

The task id is `run:node:superstep`. A resumed driver asks for the same step again:
a Redis marker says it was already sent, so it waits for that task instead of sending a
second one, and a step that already succeeded is read back from the store.
"""

from __future__ import annotations

import time

from celery.exceptions import TimeoutError as CeleryTimeout
from celery.result import AsyncResult

from ..graph.step import StepFailed
from ..runs.observer import RunCancelled
from . import resources
from .app import NODE_QUEUES, celery_app

SENT_TTL = 7 * 24 * 3600
WAIT_LIMIT = float(24 * 3600)


def step_key(run_id: str, node_id: str, superstep: int) -> str:
    return f"{run_id}:{node_id}:{superstep}"


class NodeDispatcher:
    def __init__(self, run_id: str, spec):
        self.run_id = run_id
        self.types = {n.id: n.type for n in spec.nodes}

    def __call__(self, node_id: str, state: dict, superstep: int) -> dict:
        store = resources.store()
        key = step_key(self.run_id, node_id, superstep)
        done = store.finished_step_output(key)
        if done is not None:
            return done
        if store.status(self.run_id) == "cancelled":
            raise RunCancelled("run was cancelled")
        first = resources.redis_client().set(f"af:sent:{key}", "1", nx=True, ex=SENT_TTL)
        if first:
            celery_app.send_task("agentflow.node", args=[self.run_id, node_id, key, state], task_id=key,
                                 queue=NODE_QUEUES[self.types[node_id]])
        return self._wait(key, node_id)

    def _wait(self, key: str, node_id: str) -> dict:
        result = AsyncResult(key, app=celery_app)
        deadline = time.monotonic() + WAIT_LIMIT
        while True:
            try:
                reply = result.get(timeout=1.0, interval=0.05, disable_sync_subtasks=False, propagate=False)
            except CeleryTimeout:
                if resources.store().status(self.run_id) == "cancelled":
                    raise RunCancelled("run was cancelled") from None
                if time.monotonic() > deadline:
                    raise StepFailed(node_id, "no worker finished this step in time") from None
                continue
            if not isinstance(reply, dict):  # the task itself crashed
                done = resources.store().finished_step_output(key)
                if done is not None:
                    return done
                raise StepFailed(node_id, f"node task ended abnormally: {result.state}")
            if reply.get("ok"):
                return reply["update"]
            if reply.get("cancelled"):
                raise RunCancelled("run was cancelled")
            raise StepFailed(node_id, reply.get("error") or "unknown error")
