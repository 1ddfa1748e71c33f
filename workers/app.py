"""The Celery application and its queues.

- `runs`: run drivers. A driver walks the LangGraph graph (Postgres checkpointer, thread
  id = run id) and waits on node tasks; drivers run in their own worker pool so a
  waiting driver never holds a slot a node task needs (no deadlock).
- `agentflow.llm`, `agentflow.image`, `agentflow.db`, `agentflow.api`: node tasks by type,
  each scaled and rate limited on its own.
"""

from __future__ import annotations

import os

from celery import Celery
from celery.signals import worker_process_init, worker_ready
from kombu import Exchange, Queue

from .compat import guard_dead_channels

RUN_QUEUE = "runs"
NODE_QUEUES = {"llm": "agentflow.llm", "router": "agentflow.llm", "image": "agentflow.image",
               "db": "agentflow.db", "api": "agentflow.api", "tool": "agentflow.api"}
ALL_QUEUES = [RUN_QUEUE, "agentflow.llm", "agentflow.image", "agentflow.db", "agentflow.api"]
CONTROL_QUEUE = "agentflow.control"  # schedule ticks and the orphan reaper


def make_celery(redis_url: str | None = None) -> Celery:
    redis_url = redis_url or os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    app = Celery("agentflow", broker=redis_url, backend=redis_url,
                 include=["agentflow.workers.run_task", "agentflow.workers.node_task",
                          "agentflow.workers.schedule_task", "agentflow.workers.noop_task",
                          "agentflow.workers.webhook_task"])
    # A message whose worker died is redelivered after the visibility timeout. Leases
    # (workers/lease.py) make an early redelivery of a still-running task harmless, so it
    # can be short; the sweep that restores such messages runs every visibility/4 s.
    visibility = float(os.environ.get("AGENTFLOW_VISIBILITY_TIMEOUT", "300"))
    transport = {"visibility_timeout": visibility,
                 "unacked_restore_interval": max(1.0, min(30.0, visibility / 4)),
                 "unacked_restore_throttle": 1}
    app.conf.update(
        task_serializer="json", result_serializer="json", accept_content=["json"],
        task_acks_late=True, task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # one direct exchange per queue, so a message lands in exactly the queue it names
        task_queues=[Queue(q, Exchange(q, type="direct"), routing_key=q) for q in ALL_QUEUES + [CONTROL_QUEUE]],
        task_default_queue=RUN_QUEUE,
        task_routes={"agentflow.run": {"queue": RUN_QUEUE},
                     "agentflow.schedules.tick": {"queue": CONTROL_QUEUE},
                     "agentflow.runs.reap": {"queue": CONTROL_QUEUE}},
        broker_transport_options=transport,
        result_backend_transport_options={"visibility_timeout": visibility},
        result_expires=24 * 3600,
        task_track_started=True,
        broker_connection_retry_on_startup=True,
        worker_send_task_events=True, task_send_sent_event=True,  # Flower
        worker_hijack_root_logger=False,
        beat_schedule={
            "schedules-tick": {"task": "agentflow.schedules.tick",
                               "schedule": float(os.environ.get("AGENTFLOW_SCHEDULE_TICK", "1.0"))},
            "reap-orphans": {"task": "agentflow.runs.reap",
                             "schedule": float(os.environ.get("AGENTFLOW_REAP_EVERY", "15"))},
        },
    )
    return app


celery_app = make_celery()
guard_dead_channels()  # a broker restart must not take the worker down (workers/compat.py)


@worker_process_init.connect
def _fresh_connections_after_fork(**_kwargs) -> None:
    # Pool children inherit the parent's open database sockets (the parent migrated on
    # start); sharing them across processes corrupts both sides, so drop them.
    from ..store.db import dispose_all

    dispose_all()
    _freeze_startup_heap()


@worker_ready.connect
def _freeze_after_start(**_kwargs) -> None:
    _freeze_startup_heap()  # the main process: the threads and solo pools run tasks here


def _freeze_startup_heap() -> None:
    """Modules and start-up objects live as long as the worker: keep the cyclic GC from
    walking them again on every full collection (a few % of a driver's CPU per run).
    What the first run would import lazily is imported first, so it is frozen too."""
    import gc

    from ..graph import build  # noqa: F401 - LangGraph and the node implementations
    from . import node_task, run_task  # noqa: F401

    gc.collect()
    gc.freeze()


def run_worker(queues: str, concurrency: int = 2, pool: str = "prefork", loglevel: str = "info",
               hostname: str | None = None) -> int:
    from ..settings import get_settings
    from ..store.db import migrate

    migrate(get_settings().db_url)
    argv = ["worker", f"--queues={queues}", f"--concurrency={concurrency}", f"--pool={pool}",
            f"--loglevel={loglevel}", "--without-gossip", "--without-mingle"]
    if hostname:
        argv.append(f"--hostname={hostname}")
    celery_app.worker_main(argv)
    return 0


def run_beat(loglevel: str = "info") -> int:
    from ..settings import get_settings
    from ..store.db import migrate

    settings = get_settings()
    migrate(settings.db_url)
    settings.home.mkdir(parents=True, exist_ok=True)
    # beat's own schedule file only holds the two static ticks; workflow schedules live in the database
    celery_app.start(["beat", f"--loglevel={loglevel}", f"--schedule={settings.home / 'beat-schedule'}"])
    return 0
