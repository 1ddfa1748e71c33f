"""Step observer that writes each step to the store and publishes it live."""

from __future__ import annotations

import logging

from ..graph.errors import StepError
from ..graph.secrets import redact
from ..store.runs import RunStore
from .metrics import observe_step as observe

log = logging.getLogger(__name__)


def observe_step(step: dict) -> None:
    """Prometheus counters of this process (runs/metrics.py); never fails a run."""
    try:
        observe(step)
    except Exception:
        pass


class RunCancelled(StepError):
    """Raised at the next step boundary of a run whose cancel was requested."""


class RecordingObserver:
    records_input = True  # run_step passes the state the node reads (trace replay)

    def __init__(self, store: RunStore, bus, queue_of=None, worker: str | None = None,
                 step_key: str | None = None):
        self.store, self.bus = store, bus
        self.queue_of = queue_of or (lambda node_id: None)
        self.worker = worker
        self.step_key = step_key  # set by a distributed node task: makes redelivery idempotent
        self._open: dict[str, int] = {}  # node id -> id of its running step row

    def step_started(self, run_id, node_id, node_type, attempt, input=None, step_key=None):
        # Cancellation is checked at step boundaries: a cancelled run starts no new step
        # (the store checks it in the transaction that records the step).
        started = self.store.start_step(run_id, node_id, node_type, attempt, queue=self.queue_of(node_id),
                                        worker=self.worker, step_key=step_key or self.step_key, input=input,
                                        unless_cancelled=True, unless_done=self.step_key is not None)
        if started is None:
            raise RunCancelled("run was cancelled")
        self._open[node_id], step = started
        self.bus.publish(run_id, "step", step)

    def attempt_id(self, node_id: str) -> int | None:
        """The id of the node's running step row (its attempt), once started."""
        return self._open.get(node_id)

    def _end(self, run_id, node_id, **fields):
        step_id = self._open.pop(node_id, None)
        if step_id is None:
            return self.store.step_ended(run_id, node_id, **fields)
        step = self.store.end_step(step_id, **fields)
        if step is None:
            # The fence: another worker started this step again (this one was cut off or
            # too slow) and closed this attempt as lost; its result is not recorded.
            log.warning("step %s: a late result is discarded (%s; this attempt was closed as lost when another "
                        "worker took the step over)", self.step_key or f"{run_id}:{node_id}", fields.get("status"))
        return step

    def step_finished(self, run_id, node_id, *, update, tokens, cost, duration_ms):
        step = self._end(run_id, node_id, status="succeeded", duration_ms=duration_ms,
                         tokens=tokens, cost=cost, output=update)
        if step:
            self.bus.publish(run_id, "step", step)
            observe_step(step)

    def step_failed(self, run_id, node_id, *, error, duration_ms):
        step = self._end(run_id, node_id, status="failed", duration_ms=duration_ms, error=error)
        if step:
            self.bus.publish(run_id, "step", step)
            observe_step(step)

    def step_paused(self, run_id, node_id, *, duration_ms):
        """The node paused the run (its child runs still go): this attempt ends `paused`,
        and the node runs again, as a new attempt, when the run is woken."""
        step = self._end(run_id, node_id, status="paused", duration_ms=duration_ms)
        if step:
            self.bus.publish(run_id, "step", step)

    def token(self, run_id, node_id, delta):
        self.bus.publish(run_id, "token", {"node_id": node_id, "delta": redact(delta)})
