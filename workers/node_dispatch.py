"""Sends a node's work to its type's queue and pauses the run until it is done (driver side).

The driver never waits on a task. A remote node's function looks its step up by key
(`run:node:superstep`): a finished step is read back (its output, or its failure); a step
not yet finished is sent once (a Redis marker says it was) and the run pauses on it
(RunContext.wait); the node task wakes the run when the step ends.

Redis may lose what it held (a restart without persistence): the queued message, the
marker, the step's lease. A resumed run whose marker is gone sends the step again under
the same key; one whose step was started by a worker that no longer renews its lease is
sent again too. The node task is idempotent by step key, so a step that did finish is not
paid twice.
"""

from __future__ import annotations

import logging

from ..graph.runtime import wait_for
from ..graph.step import StepFailed, step_key
from ..runs.observer import RunCancelled
from . import keys, resources
from .app import NODE_QUEUES, celery_app

log = logging.getLogger(__name__)
SENT_TTL = 7 * 24 * 3600
# the step marker's values: set before the message goes out, and after
SENDING, SENT = "sending", "1"


class NodeDispatcher:
    def __init__(self, run_id: str, spec, spec_hash: str | None = None, stream: bool = False,
                 first_attempt: bool = False, tenant_id: str | None = None, traceparent: str | None = None):
        self.run_id = run_id
        # A run's first advance has finished no step yet: nothing to look up.
        self.first_attempt = first_attempt
        self.types = {n.id: n.type for n in spec.nodes}
        # what a node task would otherwise read from the store for every new run
        self.meta = {"spec_hash": spec_hash, "stream": stream, "tenant_id": tenant_id}
        if traceparent is not None:  # the run's span (runs/telemetry.py): step spans are its children
            self.meta["traceparent"] = traceparent

    def __call__(self, node_id: str, state: dict, superstep: int) -> dict:
        key = step_key(self.run_id, node_id, superstep)
        client = resources.redis_client()
        if client.set(keys.step_sent(key), SENDING, nx=True, ex=SENT_TTL):
            # Never sent, so never finished: no store read. (Redis lost its markers? Then a
            # finished step is sent again; its node task finds it ended and only wakes the run.)
            self._send(key, node_id, state, first=True)
            client.set(keys.step_sent(key), SENT, ex=SENT_TTL)
            wait_for({"kind": "step", "node": node_id, "key": key})
        if not self.first_attempt:
            run_status, outcome, output, error = resources.store().step_outcome(self.run_id, key)
            if run_status == "cancelled":
                raise RunCancelled("run was cancelled")
            if outcome == "succeeded":
                return output or {}
            if outcome == "failed":
                raise StepFailed(node_id, error or "unknown error")
        self._ensure_sent(key, node_id, state)
        wait_for({"kind": "step", "node": node_id, "key": key})
        raise AssertionError("unreachable: wait_for pauses the run")

    def recall(self, node_id: str, superstep: int) -> tuple[str, dict | None]:
        """RunContext.resume for the driver's own nodes: (step key, output if that step
        already succeeded); a resumed run reads them back, as its checkpoint may be older."""
        key = step_key(self.run_id, node_id, superstep)
        if self.first_attempt:
            return key, None
        status, done = resources.store().step_check(self.run_id, key)
        if done is None and status == "cancelled":
            raise RunCancelled("run was cancelled")
        return key, done

    def _ensure_sent(self, key: str, node_id: str, state: dict) -> None:
        """The step was sent before (its marker is set) and has not ended."""
        client = resources.redis_client()
        if client.get(keys.step_sent(key)) in (SENDING, SENDING.encode()):
            # a driver died between marking the step and sending it (the run lease makes this
            # driver the only one): the message may never have gone out
            log.warning("run %s: step %s may not have been sent (its driver died); sending it again",
                        self.run_id, key)
            self._send(key, node_id, state)
            client.set(keys.step_sent(key), SENT, ex=SENT_TTL)
            return
        if self.first_attempt or client.exists(keys.step_lock(key)):
            return  # in flight: queued, waiting for its grant, or running
        if resources.store().step_running(key):
            # Started, and its lease is gone: the worker died (a live one re-takes a vanished
            # lease within a third of its ttl; the sweep wakes the run again if this was that).
            orphan = keys.step_sent(key) + ":orphan"
            if not client.set(orphan, "1", nx=True, ex=60):
                log.warning("run %s: step %s lost its worker; sending it again", self.run_id, key)
                client.delete(orphan)
                self._send(key, node_id, state)

    def _send(self, key: str, node_id: str, state: dict, first: bool = False) -> None:
        # `first`: the step's first message, so its node task skips the look-up for an earlier
        # outcome (there is none); a message sent again (an orphaned step) looks it up
        meta = {**self.meta, "first": True} if first else self.meta
        celery_app.send_task("agentflow.node", args=[self.run_id, node_id, key, state], kwargs={"meta": meta},
                             task_id=key, queue=NODE_QUEUES.get(self.types[node_id], "agentflow.api"),
                             argsrepr=args_shown(self.run_id, node_id, key, state), kwargsrepr=repr(meta))


def args_shown(run_id: str, node_id: str, key: str, state: dict) -> str:
    """What Celery's events (Flower, `celery events`) show of a node task's arguments: the
    run, node and step, never the state. The state holds the run's inputs and outputs, which
    event watchers need not see; and Celery's own repr walks all of it for every message."""
    return f"({run_id!r}, {node_id!r}, {key!r}, <state: {len(state)} fields>)"
