"""What a node task's message shows to Celery's event watchers (Flower, `celery events`): the
run, node and step, never the run's state; the task still gets the whole state."""

from __future__ import annotations

import base64
import json

import pytest
import redis

from tests.distributed.conftest import claim_redis_db, release_redis_db

pytestmark = pytest.mark.redis


def test_a_node_message_carries_the_state_but_shows_only_the_run_node_and_step(monkeypatch):
    from agentflow.graph.validate import parse_valid
    from agentflow.workers import node_dispatch
    from agentflow.workers.app import make_celery
    from tests.chaos.harness import chaos_spec

    db = claim_redis_db()
    client = redis.Redis(host="127.0.0.1", db=db)
    try:
        monkeypatch.setattr(node_dispatch, "celery_app", make_celery(f"redis://127.0.0.1:6379/{db}"))
        dispatcher = node_dispatch.NodeDispatcher("run-1", parse_valid(chaos_spec()), tenant_id="t1")
        state = {"user_input": "the customer's private letter", "metadata": {"run_tag": "x"}}
        dispatcher._send("run-1:b:1", "b", state, first=True)
        [raw] = client.lrange(node_dispatch.NODE_QUEUES["llm"], 0, -1)
        message = json.loads(raw)
        headers = message["headers"]
        assert headers["argsrepr"] == "('run-1', 'b', 'run-1:b:1', <state: 2 fields>)"
        assert "private letter" not in json.dumps(headers), "event watchers see no state"
        assert "first" in headers["kwargsrepr"] and "t1" in headers["kwargsrepr"]
        args, kwargs, _ = json.loads(base64.b64decode(message["body"]))
        assert args == ["run-1", "b", "run-1:b:1", state], "the node task gets the whole state"
        assert kwargs["meta"]["first"] is True and kwargs["meta"]["tenant_id"] == "t1"
    finally:
        client.flushdb()
        release_redis_db(db)
