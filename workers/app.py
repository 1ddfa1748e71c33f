"""The Celery application and its queues.

- `runs`: run drivers. A driver advances a run from its LangGraph checkpoint (Postgres,
  thread id = run id) until it must wait, then returns (workers/run_task.py): no task waits
  on another, so one worker consuming every queue finishes every run.
- `agentflow.llm`, `agentflow.image`, `agentflow.db`, `agentflow.api`: node tasks by type,
  each scaled and rate limited on its own.
- `agentflow.control`: schedule ticks and webhook deliveries.
Every worker also runs the delayed-message pump and the recovery sweep (workers/recovery.py).
"""

from __future__ import annotations

import os

from celery import Celery
from celery.signals import worker_process_init, worker_ready
from kombu import Exchange, Queue

from ..graph import registry
from ..settings import RedisConfig
from .compat import guard_dead_channels

RUN_QUEUE = "runs"
BUILTIN_NODE_QUEUES = ["agentflow.llm", "agentflow.image", "agentflow.db", "agentflow.api"]
# node type -> its queue, plugins' included (read once: a new plugin takes a restart)
NODE_QUEUES = registry.node_queues()
ALL_QUEUES = [RUN_QUEUE, *BUILTIN_NODE_QUEUES,
              *sorted(set(NODE_QUEUES.values()) - set(BUILTIN_NODE_QUEUES) - {RUN_QUEUE})]
CONTROL_QUEUE = "agentflow.control"  # beat's schedule ticks
DEFAULT_QUEUES = ",".join(ALL_QUEUES + [CONTROL_QUEUE])  # what `agentflow worker` consumes by default


def make_celery(redis: "RedisConfig | str | None" = None) -> Celery:
    """`redis`: a URL or a RedisConfig (default: the settings', else the local Redis)."""
    from ..redisconn import celery_url
    from ..settings import get_settings

    url, sentinel = celery_url(redis or get_settings().redis or "redis://127.0.0.1:6379/0")
    app = Celery("agentflow", broker=url, backend=url,
                 include=["agentflow.workers.run_task", "agentflow.workers.node_task",
                          "agentflow.workers.schedule_task", "agentflow.workers.noop_task",
                          "agentflow.workers.webhook_task", "agentflow.workers.recovery"])
    # A message whose worker died is redelivered after the visibility timeout. Leases
    # (workers/lease.py) make an early redelivery of a still-running task harmless (it is
    # dropped while the step's lease lives), so it is short: a killed fleet's steps run
    # again within it. Nothing waits in a worker longer (delays are in Redis: delayed.py).
    visibility = float(os.environ.get("AGENTFLOW_VISIBILITY_TIMEOUT", "20"))
    transport = {"visibility_timeout": visibility,
                 "unacked_restore_interval": max(1.0, min(30.0, visibility / 4)),
                 "unacked_restore_throttle": 1,
                 # the lock around one restore scan (milliseconds of work): a worker cut off
                 # while holding it would block every worker's restores for kombu's default
                 # 300 s; two scans at once are safe (each restore is one WATCH transaction)
                 "unacked_mutex_expire": max(1, int(visibility / 4))}
    if sentinel:
        # A Sentinel failover is an outage of a few seconds (down-after + election) with a
        # known end: a publish (the API's submit, a task's retry) waits it out instead of
        # failing after Celery's default 0.6 s
        app.conf.task_publish_retry_policy = {"max_retries": 30, "interval_start": 0, "interval_step": 0.5,
                                              "interval_max": 0.5}
    app.conf.update(
        task_serializer="json", result_serializer="json", accept_content=["json"],
        task_acks_late=True, task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # one direct exchange per queue, so a message lands in exactly the queue it names
        task_queues=[Queue(q, Exchange(q, type="direct"), routing_key=q) for q in ALL_QUEUES + [CONTROL_QUEUE]],
        task_default_queue=RUN_QUEUE,
        task_routes={"agentflow.run": {"queue": RUN_QUEUE},
                     "agentflow.schedules.tick": {"queue": CONTROL_QUEUE}},
        broker_transport_options={**transport, **sentinel},
        result_backend_transport_options={"visibility_timeout": visibility, **sentinel},
        result_expires=24 * 3600,
        task_track_started=True,
        broker_connection_retry_on_startup=True,
        worker_send_task_events=True, task_send_sent_event=True,  # Flower
        worker_hijack_root_logger=False,
        beat_schedule={
            "schedules-tick": {"task": "agentflow.schedules.tick",
                               "schedule": float(os.environ.get("AGENTFLOW_SCHEDULE_TICK", "1.0"))},
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

    celery_app.loader.import_default_modules()  # the task modules (`include`), which import this one
    gc.collect()
    gc.freeze()


def run_worker(queues: str = DEFAULT_QUEUES, concurrency: int = 2, pool: str = "prefork", loglevel: str = "info",
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
