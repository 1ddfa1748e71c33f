"""Sends a node's work to its type's queue and waits for the result (run-driver side).

The task id is `run:node:superstep`. A resumed driver asks for the same step again:
a Redis marker says it was already sent, so it waits for that task instead of sending a
second one, and a step that already succeeded is read back from the store.

Redis may lose what it held (a restart without persistence): the queued message, the
task's result, its lease and the "sent" marker. So while it waits, the driver also
looks in the store every few seconds (a step that succeeded is read back even if its
result never reached the backend), and when the marker is gone and no worker holds the
step's lease, it sends the task again under the same id; the node task is idempotent by
step key, so a step that did finish meanwhile is not paid twice.
"""

from __future__ import annotations

import logging
import time

from celery.exceptions import TimeoutError as CeleryTimeout
from celery.result import AsyncResult

from ..graph.step import StepFailed, describe
from ..runs.observer import RunCancelled
from . import resources
from .app import NODE_QUEUES, celery_app

log = logging.getLogger(__name__)
SENT_TTL = 7 * 24 * 3600
WAIT_LIMIT = float(24 * 3600)
RECHECK_SECONDS = 2.0   # how often a waiting driver looks at the store and the marker
ORPHAN_GRACE = 16.0     # a running step whose lease is gone this long lost its worker (> STEP_LEASE)
CRASH_RESENDS = 2       # a node task that crashed (not a step failure) is sent again this many times


def step_key(run_id: str, node_id: str, superstep: int) -> str:
    return f"{run_id}:{node_id}:{superstep}"


def _infra_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean the broker or result backend is unreachable for a moment."""
    import kombu.exceptions
    import redis.exceptions

    return (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, kombu.exceptions.OperationalError,
            ConnectionError, OSError)


class NodeDispatcher:
    def __init__(self, run_id: str, spec, spec_hash: str | None = None, stream: bool = False,
                 first_attempt: bool = False, tenant_id: str | None = None, on_done=None,
                 traceparent: str | None = None):
        self.run_id = run_id
        self.on_done = on_done  # told the superstep of each step back (the checkpointer writes after it)
        # A first attempt of a run has finished no step yet; a cancel is still seen, by the
        # node task (and by the next step the driver starts).
        self.first_attempt = first_attempt
        self.types = {n.id: n.type for n in spec.nodes}
        # what a node task would otherwise read from the store for every new run
        self.meta = {"spec_hash": spec_hash, "stream": stream, "tenant_id": tenant_id}
        if traceparent is not None:  # the run's span (runs/telemetry.py): step spans are its children
            self.meta["traceparent"] = traceparent
        self._orphaned: dict[str, float] = {}  # step key -> when its running step was first seen leaseless

    def __call__(self, node_id: str, state: dict, superstep: int) -> dict:
        update = self._step(node_id, state, superstep)
        if self.on_done is not None:
            self.on_done(superstep)
        return update

    def recall(self, node_id: str, superstep: int) -> tuple[str, dict | None]:
        """(step key, output if that step already succeeded) of a node in a superstep; a
        first attempt has finished none. Also RunContext.resume for the driver's own nodes:
        a resumed run reads them back too, as its checkpoints may be older than them."""
        key = step_key(self.run_id, node_id, superstep)
        if self.first_attempt:
            return key, None
        status, done = resources.store().step_check(self.run_id, key)
        if done is None and status == "cancelled":
            raise RunCancelled("run was cancelled")
        return key, done

    def _step(self, node_id: str, state: dict, superstep: int) -> dict:
        key, done = self.recall(node_id, superstep)
        if done is not None:
            return done
        first = resources.redis_client().set(f"af:sent:{key}", "1", nx=True, ex=SENT_TTL)
        if first:
            self._send(key, node_id, state)
        return self._wait(key, node_id, state)

    def _send(self, key: str, node_id: str, state: dict) -> None:
        celery_app.send_task("agentflow.node", args=[self.run_id, node_id, key, state], kwargs={"meta": self.meta},
                             task_id=key, queue=NODE_QUEUES[self.types[node_id]])

    def _wait(self, key: str, node_id: str, state: dict) -> dict:
        result = AsyncResult(key, app=celery_app)
        deadline = time.monotonic() + WAIT_LIMIT
        next_check = time.monotonic() + RECHECK_SECONDS
        infra = _infra_errors()
        crashes = 0
        while True:
            try:
                reply = result.get(timeout=1.0, interval=0.05, disable_sync_subtasks=False, propagate=False)
            except (CeleryTimeout, *infra) as exc:
                if not isinstance(exc, CeleryTimeout):
                    log.warning("run %s: result backend unreachable while waiting on %s (%s)", self.run_id, key,
                                type(exc).__name__)
                    time.sleep(1.0)
                if time.monotonic() >= next_check:
                    next_check = time.monotonic() + RECHECK_SECONDS
                    status, done = resources.store().step_check(self.run_id, key)
                    if status == "cancelled":
                        raise RunCancelled("run was cancelled") from None
                    if done is not None:  # it finished, but its result never reached us
                        return done
                    self._resend_if_lost(key, node_id, state)
                if time.monotonic() > deadline:
                    raise StepFailed(node_id, "no worker finished this step in time") from None
                continue
            if not isinstance(reply, dict):  # the task itself crashed
                done = resources.store().finished_step_output(key)
                if done is not None:
                    return done
                crash = result.result if isinstance(result.result, BaseException) else None
                why = f"node task crashed: {describe(crash)}" if crash is not None else \
                    f"node task ended abnormally: {result.state}"
                crashes += 1
                if crashes <= CRASH_RESENDS:
                    # Usually infrastructure (e.g. its retry could not be queued while Redis
                    # restarted). The task is idempotent by step key: run it again, a few times.
                    log.warning("run %s: %s; sending step %s again", self.run_id, why, key)
                    result.forget()
                    resources.redis_client().set(f"af:sent:{key}", "1", ex=SENT_TTL)
                    self._send(key, node_id, state)
                    continue
                raise StepFailed(node_id, why)
            if reply.get("ok"):
                return reply["update"]
            if reply.get("cancelled"):
                raise RunCancelled("run was cancelled")
            raise StepFailed(node_id, reply.get("error") or "unknown error")

    def _resend_if_lost(self, key: str, node_id: str, state: dict) -> None:
        """Send the task again if Redis no longer knows it (marker gone) and no live worker
        holds it (its lease is renewed every few seconds, and re-taken after a restart)."""
        try:
            client = resources.redis_client()
            if client.exists(f"af:sent:{key}") or client.exists(f"af:step-lock:{key}"):
                self._orphaned.pop(key, None)
                return
            if resources.store().step_running(key):
                # A worker started it. If that worker lives it re-takes its lease within a
                # few seconds; only a lease gone for longer than the grace means it died.
                since = self._orphaned.setdefault(key, time.monotonic())
                if time.monotonic() - since < ORPHAN_GRACE:
                    return
            if client.set(f"af:sent:{key}", "1", nx=True, ex=SENT_TTL):
                log.warning("run %s: the message of step %s was lost (Redis restarted?); sending it again",
                            self.run_id, key)
                self._orphaned.pop(key, None)
                self._send(key, node_id, state)
        except _infra_errors() as exc:
            log.warning("run %s: could not check step %s (%s); will try again", self.run_id, key, type(exc).__name__)
