"""The delayed-message pump against a real Redis: a message it sends may run and be delayed
again (a rate-limited step denied a second time) before the pump removes what it sent; the
new entry must survive. (Found by the Sentinel failover test: under load a run stalled for
good, its step's only message deleted.)"""

from __future__ import annotations

import json
import time

import pytest
import redis

from agentflow.workers import keys
from agentflow.workers.delayed import pump, send_later
from tests.scale.harness import plain_redis

pytestmark = pytest.mark.distributed


class QuickWorker:
    """Stands in for Celery where the pump hands a message over: the task "runs" at once and
    is denied its grant again, so it puts the same message back, due later."""

    def __init__(self, client):
        self.client, self.sent = client, []

    def send_task(self, name, args, kwargs, queue, task_id):
        self.sent.append(task_id)
        if len(self.sent) == 1:
            send_later(self.client, name, args, queue, time.time() + 30, task_id=task_id, kwargs=kwargs)


def test_a_message_delayed_again_while_being_sent_is_kept(tmp_path):
    proc, url = plain_redis(tmp_path)
    try:
        client = redis.Redis.from_url(url)
        send_later(client, "agentflow.node", ["run", "writer", "run:writer:2"], "agentflow.llm", time.time() - 1,
                   task_id="run:writer:2")
        worker = QuickWorker(client)
        assert pump(client, worker) == 1
        left = client.zrange(keys.DELAYED, 0, -1, withscores=True)
        assert len(left) == 1, "the message put back while it was being sent was deleted"
        assert json.loads(left[0][0])["id"] == "run:writer:2" and left[0][1] > time.time() + 20
        # and a message not put back is removed once sent
        client.delete(keys.DELAYED)
        send_later(client, "agentflow.node", ["r2"], "agentflow.llm", time.time() - 1, task_id="r2")
        worker.sent = ["already"]  # sends without putting anything back
        assert pump(client, worker) == 1 and client.zcard(keys.DELAYED) == 0
    finally:
        proc.stop()
