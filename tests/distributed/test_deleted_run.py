"""A run deleted while its node task was queued: the task ends quietly, as for a cancelled
run (the step is not run, nothing crashes), on real Postgres and Redis. The task's first
message skips the outcome look-up (`_first_delivery`), so the store's step start and the
spec look-up are what see the run is gone."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy import text

from tests.chaos.harness import chaos_spec
from tests.distributed.conftest import dist_env, store_for  # noqa: F401  (module fixture)
from tests.servers.openai_server import OpenAIServer

STATE = {"user_input": "x", "metadata": {"run_tag": "gone"}}


@pytest.fixture
def node_task(dist_env, monkeypatch):  # noqa: F811
    """The node task module on this module's database and Redis db (in this process)."""
    import redis

    from agentflow.runs.events import RedisEventBus
    from agentflow.workers import node_task
    from agentflow.workers.app import make_celery

    client = redis.Redis.from_url(dist_env["REDIS_URL"])
    store = store_for(dist_env)
    monkeypatch.setattr(node_task.resources, "store", lambda: store)
    monkeypatch.setattr(node_task.resources, "redis_client", lambda: client)
    monkeypatch.setattr(node_task.resources, "bus", lambda: RedisEventBus(client))
    monkeypatch.setattr(node_task.resources, "limiter", lambda: None)  # the spec has no limits
    monkeypatch.setattr(node_task, "celery_app", make_celery(dist_env["REDIS_URL"]))  # its wake-up
    node_task.clear_caches()
    yield node_task
    node_task.clear_caches()


@pytest.mark.parametrize("delivery", ["first, spec known", "first, spec unknown", "again"])
def test_a_node_task_of_a_deleted_run_ends_quietly(node_task, dist_env, monkeypatch, caplog,  # noqa: F811
                                                   delivery):
    """`spec known`: the worker ran this spec before (its nodes are cached by spec hash);
    `again`: a message sent again, which looks the step's outcome up first."""
    from agentflow.graph.spec import spec_hash

    spec = chaos_spec()
    store = store_for(dist_env)
    run_id = store.create(spec, STATE, workflow_id=spec["id"])
    key = f"{run_id}:b:1"
    meta = {"spec_hash": spec_hash(spec), "stream": False, **({"first": True} if "first" in delivery else {})}
    if delivery == "first, spec known":
        node_task._impl(run_id, "b", meta["spec_hash"])
    with store.factory() as s:  # deleted by hand: the store has no delete; its steps go with it
        s.execute(text("DELETE FROM runs WHERE id = :id"), {"id": run_id})
        s.commit()

    with OpenAIServer() as llm, caplog.at_level(logging.INFO):
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        monkeypatch.setenv("OPENAI_BASE_URL", llm.base_url)
        reply = node_task.run_node(run_id, "b", key, STATE, meta)
        assert llm.calls == []  # the step was not run
    assert reply["ok"] is False and reply.get("cancelled") is True, reply
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    with store.factory() as s:
        assert s.execute(text("SELECT count(*) FROM steps WHERE step_key = :k"), {"k": key}).scalar() == 0
