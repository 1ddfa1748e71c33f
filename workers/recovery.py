"""What every worker runs beside its tasks: the delayed-message pump, the recovery sweep and
the schedule tick.

No beat is needed for either. Each runs in one process of the fleet at a time, under a
Redis lease; when that process dies its lease expires and another worker's loop takes over.

How a lost worker is noticed, from the fastest to the slowest:
- a step's lease (STEP_LEASE = 15 s, renewed every 5 s while the step runs): a redelivered
  message of a step whose lease is gone runs the step again; one whose lease is alive is dropped;
- the broker's visibility timeout (AGENTFLOW_VISIBILITY_TIMEOUT, default 20 s): a message a
  killed worker had taken is delivered again that long after it was taken, by any live worker;
- the sweep (every AGENTFLOW_SWEEP_EVERY = 5 s): a run not heard of for STALE_AFTER is woken
  when it has news nobody advanced (its driver died holding the run), when its waits no longer
  exist in Redis (it restarted empty, losing queued messages: its driver sends them again), or
  when it waits for child runs; a queued run whose first message was lost is sent again (once
  the `runs` queue has drained: behind a backlog its message is most likely still queued).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from datetime import timedelta

from celery.signals import worker_ready, worker_shutdown

from . import keys, resources
from .app import celery_app
from .delayed import next_due, pump
from .lease import Lease
from .wake import wake

log = logging.getLogger(__name__)
PUMP_IDLE = 0.05      # seconds between looks at the delayed set when nothing is due sooner
PUMP_LEASE = 3        # seconds: another worker takes the pump over within this of its holder dying
STALE_AFTER = 20.0    # a run not heard of this long is looked at by the sweep


def sweep(store, client, app) -> int:
    """Wake the runs whose wake-up was lost; returns how many were woken."""
    from ..store.models import utcnow

    from .app import RUN_QUEUE

    woken = 0
    backlog = None
    for run_id, status, waits in store.stale_runs(utcnow() - timedelta(seconds=STALE_AFTER)):
        if client.exists(keys.run_lock(run_id)):
            continue  # a driver advances it now
        if status == "queued":
            if backlog is None:
                backlog = client.llen(RUN_QUEUE)
            if backlog:
                # Its first message is most likely still in the queue behind the others: sending
                # it again would grow the backlog (up to 500 extra driver messages a sweep) faster
                # than the drivers drain it. A lost message shows once the queue has drained.
                continue
        lost = status == "queued" or not waits or client.exists(keys.run_news(run_id)) or any(
            w.get("kind") == "step" and not client.exists(keys.step_sent(w["key"])) for w in waits) or any(
            w.get("kind") == "children" for w in waits)
        if lost:
            log.warning("sweep: waking run %s (%s; its wake-up or messages were lost)", run_id, status)
            wake(client, app, run_id)
            woken += 1
    return woken


class Background(threading.Thread):
    """The pump and the sweep of one worker process."""

    def __init__(self, app, sweep_every: float, schedule_every: float = 1.0):
        super().__init__(daemon=True, name="agentflow-background")
        self.app, self.sweep_every, self.schedule_every = app, sweep_every, schedule_every
        self.stop = threading.Event()
        self._pump_lease: Lease | None = None

    def run(self) -> None:
        next_sweep = time.monotonic() + 1.0
        next_tick = time.monotonic() + self.schedule_every
        while not self.stop.is_set():
            delay = 1.0
            try:
                client = resources.redis_client()
                if self._holds_pump(client):
                    pump(client, self.app)
                    due = next_due(client)
                    delay = PUMP_IDLE if due is None else min(1.0, max(0.005, due - time.time()))
                    delay = min(delay, PUMP_IDLE * 4)
                if time.monotonic() >= next_sweep:
                    next_sweep = time.monotonic() + self.sweep_every
                    if client.set(keys.SWEEP_LOCK, "1", nx=True, ex=max(1, int(self.sweep_every))):
                        sweep(resources.store(), client, self.app)
                if time.monotonic() >= next_tick:
                    # cron schedules fire without beat too (beat, when run, does the same, once)
                    next_tick = time.monotonic() + self.schedule_every
                    if client.set(keys.SCHEDULE_LOCK, "1", nx=True, px=max(100, int(self.schedule_every * 900))):
                        from .schedule_task import tick

                        tick()
            except Exception as exc:  # Redis or the database blinked: try again shortly
                log.warning("background loop: %s", exc)
                if self._pump_lease is not None:
                    # stop its renewal thread: left running, it would keep (or take back) the
                    # key with its token after the blip (a Sentinel failover replicates the
                    # key), and no new lease, here or in any worker, could take the pump again
                    self._pump_lease.release()
                self._pump_lease = None
                delay = 1.0
            self.stop.wait(delay)
        if self._pump_lease is not None:
            self._pump_lease.release()

    def _holds_pump(self, client) -> bool:
        if self._pump_lease is not None and not self._pump_lease.lost:
            return True
        lease = Lease(client, keys.PUMP_LOCK, PUMP_LEASE)
        if lease.acquire():
            self._pump_lease = lease
            return True
        return False


_background: Background | None = None


@worker_ready.connect
def _start_background(**_kwargs) -> None:
    """In the worker's main process (this module is one of the app's task modules)."""
    global _background
    if _background is None:
        _background = Background(celery_app, float(os.environ.get("AGENTFLOW_SWEEP_EVERY", "5")),
                                 float(os.environ.get("AGENTFLOW_SCHEDULE_TICK", "1.0")))
        _background.start()


@worker_shutdown.connect
def _stop_background(**_kwargs) -> None:
    if _background is not None:
        _background.stop.set()
