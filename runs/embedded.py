"""Embedded executor: runs a workflow in this process (no Redis, no Celery).

The run row and its steps go to the store exactly as in distributed mode, so the API,
Studio and `agentflow run` see the same records either way. A run that waits for a person
(a `human` node) keeps a LangGraph checkpoint in SQLite under AGENTFLOW_HOME and holds no
thread while it waits; an answer (or its timeout) advances it again.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from ..graph.runtime import RunContext
from ..graph.validate import parse_valid
from ..store.runs import RunStore
from .advance import advance
from .children import EmbeddedChildRuns
from .events import EventBus, MemoryEventBus
from . import telemetry
from .observer import RecordingObserver
from .people import StorePeople

log = logging.getLogger(__name__)


def waits_for_people(spec) -> bool:
    return any(n.type == "human" for n in spec.nodes)


class EmbeddedExecutor:
    def __init__(self, store: RunStore, bus: EventBus | None = None, limiter=None, workers: int = 4,
                 extra: dict | None = None, checkpoints: Path | None = None, child_workers: int | None = None):
        self.store = store
        self.bus = bus or MemoryEventBus()
        self.limiter = limiter
        self.extra = extra or {}
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="agentflow-run")
        # called with the run record when a run ends (outbound webhooks, metrics)
        self.listeners: list = []
        self.checkpoints = checkpoints  # the SQLite file of paused runs' checkpoints (None: in memory)
        self._saver = None
        self._saver_lock = threading.Lock()
        self._timers: dict[tuple[str, float], threading.Timer] = {}
        if child_workers is None:
            from ..settings import get_settings

            child_workers = get_settings().child_run_workers
        # workflow and map nodes: child runs in this process, each run to its end by execute
        self.children = EmbeddedChildRuns(store, self.execute, workers=child_workers)

    def submit(self, run_id: str) -> Future:
        return self.pool.submit(self.execute, run_id)

    def checkpointer(self):
        """LangGraph's SQLite saver, made on first use (only runs that may wait need one)."""
        with self._saver_lock:
            if self._saver is None:
                from langgraph.checkpoint.sqlite import SqliteSaver

                from ..store import crypto

                path = str(self.checkpoints) if self.checkpoints is not None else ":memory:"
                if self.checkpoints is not None:
                    self.checkpoints.parent.mkdir(parents=True, exist_ok=True)
                # encrypted like the run rows when AGENTFLOW_ENCRYPTION_KEY is set
                self._saver = crypto.sealed_saver(SqliteSaver)(sqlite3.connect(path, check_same_thread=False),
                                                               serde=crypto.CheckpointSerde())
            return self._saver

    def wake_at(self, run_id: str, when: float) -> None:
        """Advance the run at `when` (a human node's deadline); once per run and time."""
        key = (run_id, round(when, 3))
        with self._saver_lock:
            if key in self._timers:
                return
            timer = threading.Timer(max(0.0, when - time.time()), self.submit, args=(run_id,))
            timer.daemon = True
            self._timers[key] = timer
        timer.start()

    def rearm(self) -> int:
        """At start: arm the deadlines of runs that wait for a person (a restart loses timers)."""
        armed = 0
        for run_id, waits in self.store.waiting_runs():
            for wait in waits:
                if wait.get("deadline"):
                    self.wake_at(run_id, float(wait["deadline"]))
                    armed += 1
        return armed

    def execute(self, run_id: str, observer=None) -> dict:
        """Advance a stored run until it ends or waits; returns the run record (never raises
        for a failing run)."""
        begun = self.store.begin(run_id)
        if begun is None:
            record = self.store.get(run_id)
            if record is None:
                raise KeyError(run_id)
            return record
        spec = parse_valid(begun["spec"])
        queue_of = {n.id: n.queue for n in spec.nodes}.get
        trace = telemetry.run_scope(run_id, begun["options"], spec.id, begun["tenant_id"],
                                    begun.get("started_at"))
        obs = trace.observe(observer or RecordingObserver(self.store, self.bus, queue_of=queue_of))
        extra = dict(self.extra)
        if begun["options"].get("stream"):
            extra["stream"] = True
        ctx = RunContext(run_id=run_id, observer=obs, limiter=self.limiter, extra=extra,
                         tenant_id=begun["tenant_id"], people=StorePeople(self.store, self.bus, self.wake_at),
                         children=self.children)
        saver = self.checkpointer() if waits_for_people(spec) else None
        # the first advance starts from the input; a resumed one from its checkpoint
        fresh = saver is None or saver.get_tuple({"configurable": {"thread_id": run_id}}) is None
        # a re-run starts at its chosen node, its input being the state at that point
        advance(self.store, self.bus, spec, run_id, ctx, run_input=begun["input"] if fresh else None,
                tenant_id=begun["tenant_id"], checkpointer=saver, start=begun["rerun_from"],
                listeners=[*self.listeners, lambda rec: trace.end(rec.get("status"), rec.get("error"))])
        return self.store.get(run_id) or {}

    def shutdown(self) -> None:
        for timer in list(self._timers.values()):
            timer.cancel()
        self.pool.shutdown(wait=False, cancel_futures=True)
