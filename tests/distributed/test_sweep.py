"""The recovery sweep (workers/recovery.py) on real Postgres and Redis: a queued run whose first
message is still in a backlog is not sent again (that grew a 10,000-run backlog faster than the
drivers drained it, bench/waiting_runs.py); once the queue has drained, a run still queued has
lost its message and is sent again."""

from __future__ import annotations

import redis
from sqlalchemy import text

from agentflow.store.db import session_factory
from agentflow.store.runs import RunStore
from agentflow.workers.app import RUN_QUEUE
from agentflow.workers.recovery import sweep

SPEC = {"id": "swept", "name": "swept", "start_node": "a", "nodes": [{"id": "a", "type": "input"}], "edges": []}


class SentTasks:
    """Stands in for the Celery app's send_task only: records what the sweep sends."""

    def __init__(self):
        self.sent = []

    def send_task(self, name, args=None, **_kw):
        self.sent.append((name, args))


def _age(store: RunStore, run_id: str) -> None:
    with store.factory() as s:
        s.execute(text("UPDATE runs SET created_at = now() - interval '5 minutes', "
                       "heartbeat_at = now() - interval '5 minutes' WHERE id = :id"), {"id": run_id})
        s.commit()


def test_a_queued_run_is_sent_again_only_once_the_run_queue_has_drained(dist_env):
    client = redis.Redis.from_url(dist_env["REDIS_URL"])
    store = RunStore(session_factory(dist_env["DATABASE_URL"]))
    run_id = store.create(SPEC, {"user_input": "x"}, workflow_id=SPEC["id"])
    _age(store, run_id)
    app = SentTasks()
    client.delete(RUN_QUEUE)
    client.lpush(RUN_QUEUE, b"another run's driver message")  # a backlog
    try:
        assert sweep(store, client, app) == 0
        assert app.sent == [], "a queued run behind a backlog must not be sent again"
    finally:
        client.delete(RUN_QUEUE)
    _age(store, run_id)  # the sweep stamped it; make it stale again
    assert sweep(store, client, app) == 1
    assert app.sent == [("agentflow.run", [run_id])], "the drained queue no longer holds its message: resend"
