"""API side of distributed mode: enqueue runs, cancel them, and ask whether workers live."""

from __future__ import annotations

from ..redisconn import redis_client
from ..runs.events import RedisEventBus
from ..settings import RedisConfig
from .app import ALL_QUEUES, CONTROL_QUEUE, RUN_QUEUE, celery_app


class CeleryDispatcher:
    def __init__(self, redis: RedisConfig | str | None = None):
        self.redis = redis_client(redis)
        self.bus = RedisEventBus(self.redis, config=redis)  # the API's hub subscribes there

    def submit(self, run_id: str) -> None:
        # task id = run id: Flower and the result backend show runs by their id
        celery_app.send_task("agentflow.run", args=[run_id], task_id=run_id, queue=RUN_QUEUE)

    def cancel(self, run_id: str) -> None:
        # A queued driver is dropped; a running one stops at its next step boundary.
        celery_app.control.revoke(run_id)

    def ping_broker(self) -> bool:
        return bool(self.redis.ping())

    def queue_depths(self) -> dict[str, int]:
        """Messages waiting per Celery queue: with the Redis broker each queue is a list named
        after it (messages sent with a priority would sit in sibling lists; AgentFlow sends none)."""
        pipe = self.redis.pipeline(transaction=False)
        queues = [*ALL_QUEUES, CONTROL_QUEUE]
        for q in queues:
            pipe.llen(q)
        return dict(zip(queues, pipe.execute()))

    def ping_workers(self, timeout: float = 1.0) -> list[str]:
        replies = celery_app.control.ping(timeout=timeout) or []
        return [name for reply in replies for name in reply]
