"""Step observer that writes each step to the store and publishes it live."""

from __future__ import annotations

import logging

from ..graph.errors import StepError
from ..graph.secrets import redact
from ..store.models import utcnow
from ..store.runs import RunStore, step_dict
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


# Node types that only compute on the state: they never call out, wait or pause, and run in
# the driver (or the embedded executor) in microseconds. Their step row is written once, when
# they end; the running phase is only published. A crash mid-way leaves no row, and the step
# simply runs again (it has no effect outside the run).
INSTANT_TYPES = frozenset({"input", "aggregator"})


class RecordingObserver:
    records_input = True  # run_step passes the state the node reads (trace replay)

    def __init__(self, store: RunStore, bus, queue_of=None, worker: str | None = None,
                 step_key: str | None = None):
        self.store, self.bus = store, bus
        self.queue_of = queue_of or (lambda node_id: None)
        self.worker = worker
        self.step_key = step_key  # set by a distributed node task: makes redelivery idempotent
        self._open: dict[str, int] = {}  # node id -> id of its running step row
        self._instant: dict[str, dict] = {}  # node id -> an instant step not written yet

    def step_started(self, run_id, node_id, node_type, attempt, input=None, step_key=None):
        if node_type in INSTANT_TYPES and self.step_key is None:
            step = {"run_id": run_id, "node_id": node_id, "node_type": node_type, "status": "running",
                    "attempt": attempt, "queue": self.queue_of(node_id), "worker": self.worker,
                    "started_at": utcnow(), "finished_at": None, "duration_ms": None, "tokens": 0, "cost": 0.0,
                    "error": None}
            self._instant[node_id] = {"step": step, "input": input, "step_key": step_key}
            self.bus.publish(run_id, "step", step_dict(step))
            return
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
        instant = self._instant.pop(node_id, None)
        if instant is not None:
            return self._record(run_id, node_id, instant, fields)
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

    def _record(self, run_id, node_id, instant: dict, fields: dict):
        step = instant["step"]
        recorded = self.store.record_step(run_id, node_id, step["node_type"], attempt=step["attempt"],
                                          queue=step["queue"], worker=step["worker"], started_at=step["started_at"],
                                          input=instant["input"], step_key=instant["step_key"], **fields)
        if recorded is not None:
            return recorded
        # Nothing written: the run was cancelled, or the key has a row (an earlier attempt of
        # a resumed run). The two-step path tells which and keeps its rules for either.
        started = self.store.start_step(run_id, node_id, step["node_type"], step["attempt"], queue=step["queue"],
                                        worker=step["worker"], step_key=instant["step_key"],
                                        input=instant["input"], unless_cancelled=True)
        if started is None:
            raise RunCancelled("run was cancelled")
        return self.store.end_step(started[0], **fields)

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
