"""GET /queues and GET /queues/{id}: the queue limits of the tenant's workflows with the
live figures of the limiter the runs are charged to, and the per-queue gauges on /metrics."""

from __future__ import annotations

import uuid

import pytest

from agentflow.graph.spec import Queue
from agentflow.graph.step import QueueCharge
from agentflow.ratelimit import LimiterUnavailable, QueueLimits, memory_limiter
from tests.api.support import assert_error_shape, rules_spec, wait_run


def uid(prefix: str) -> str:
    # the process-wide memory limiter outlives a test: unique ids keep tests apart
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def queued_spec(wid: str, queues: list[dict], llm_queue: str | None = None) -> dict:
    """input -> writer (llm, on `llm_queue`) -> final; or the rules demo when no llm queue."""
    if llm_queue is None:
        return rules_spec(id=wid, queues=queues)
    return {
        "id": wid, "name": wid, "start_node": "input",
        "nodes": [
            {"id": "input", "type": "input"},
            {"id": "writer", "type": "llm", "source": "gpt", "queue": llm_queue,
             "config": {"prompt": "Reply to: {user_input}", "max_tokens": 50}},
            {"id": "final", "type": "aggregator", "config": {"fields": ["text_result"]}},
        ],
        "edges": [{"from": "input", "to": "writer"}, {"from": "writer", "to": "final"}],
        "queues": queues,
        "sources": [{"id": "gpt", "kind": "llm", "provider": "openai", "model": "gpt-4o-mini",
                     "api_key_env": "OPENAI_API_KEY", "base_url_env": "OPENAI_BASE_URL"}],
    }


SHARED = {"id": "llm", "max_messages_per_second": 4, "max_tokens_per_minute": 6000, "burst_size": 2,
          "sub_queues": [{"id": "paid", "weight": 3}, {"id": "free", "weight": 1}]}
IMAGES = {"id": "images", "max_requests_per_minute": 120}


def limits(wid: str, queue: dict) -> QueueLimits:
    return QueueLimits.of(QueueCharge.of(Queue.model_validate(queue), namespace=wid))


def test_lists_every_queue_with_its_limits(client):
    assert client.get("/queues").json() == {"items": [], "next_cursor": None}
    wid = uid("wf")
    assert client.post("/workflows", json=queued_spec(wid, [SHARED, IMAGES])).status_code == 201
    assert client.post("/workflows", json=rules_spec(id=uid("noq"))).status_code == 201  # no queues
    body = client.get("/queues").json()
    assert body["next_cursor"] is None
    assert [q["id"] for q in body["items"]] == [f"{wid}:images", f"{wid}:llm"]
    llm = body["items"][1]
    assert llm["workflow_id"] == wid and llm["queue_id"] == "llm"
    assert llm["limits"] == {"max_messages_per_second": 4.0, "max_requests_per_minute": None,
                             "max_tokens_per_minute": 6000, "burst_size": 2,
                             "sub_queues": [{"id": "paid", "weight": 3.0}, {"id": "free", "weight": 1.0}],
                             "max_concurrency": None, "concurrency_key": None}
    # nothing ran yet: zero figures, every sub-queue (and the implicit default) listed
    assert llm["rate_per_second"] == 0 and llm["requests_per_minute"] == 0 and llm["tokens_per_minute"] == 0
    assert llm["waiting"] == {"paid": 0, "free": 0, "default": 0}
    assert llm["granted"] == {"paid": 0, "free": 0, "default": 0}
    assert llm["tokens_available"] == 6000
    images = body["items"][0]
    assert images["limits"]["max_requests_per_minute"] == 120 and images["limits"]["sub_queues"] == []
    assert images["tokens_available"] is None and images["waiting"] == {"default": 0}
    # one queue; the workflow filter
    one = client.get(f"/queues/{wid}:llm")
    assert one.status_code == 200 and one.json() == llm
    assert [q["id"] for q in client.get("/queues", params={"workflow_id": wid}).json()["items"]] == \
        [f"{wid}:images", f"{wid}:llm"]
    assert client.get("/queues", params={"workflow_id": "nope"}).json()["items"] == []


def test_a_new_version_shows_its_own_queues(client):
    wid = uid("wf")
    client.post("/workflows", json=queued_spec(wid, [SHARED]))
    client.put(f"/workflows/{wid}", json=queued_spec(wid, [IMAGES]))
    assert [q["id"] for q in client.get("/queues").json()["items"]] == [f"{wid}:images"]
    assert client.get(f"/queues/{wid}:llm").status_code == 404
    client.delete(f"/workflows/{wid}")
    assert client.get("/queues").json()["items"] == []


def test_unknown_ids_are_404(client):
    wid = uid("wf")
    client.post("/workflows", json=queued_spec(wid, [SHARED]))
    for bad in (f"{wid}:nope", "nope:llm", wid, f"{wid}:", ":llm", f"{wid}:llm:x"):
        body = assert_error_shape(client.get(f"/queues/{bad}"), 404)
        assert "not found" in body["detail"]


def test_pagination_walks_every_queue_once(client):
    wids = sorted(uid(f"p{i}") for i in range(4))
    for wid in wids:
        client.post("/workflows", json=queued_spec(wid, [SHARED, IMAGES, {"id": "zeta"}]))
    want = [f"{w}:{q}" for w in wids for q in ("images", "llm", "zeta")]
    for size in (1, 2, 3, 5, 200):
        seen, cursor = [], None
        while True:
            params = {"limit": size, **({"cursor": cursor} if cursor else {})}
            page = client.get("/queues", params=params).json()
            assert len(page["items"]) <= size
            seen += [q["id"] for q in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == want, size
    assert_error_shape(client.get("/queues", params={"cursor": "garbage"}), 422)
    assert_error_shape(client.get("/queues", params={"limit": 0}), 422)


def test_figures_come_from_the_embedded_executors_limiter(client):
    """Embedded mode: the route reads the process-wide memory limiter the executor uses."""
    from agentflow.api.routes.queues import queue_limiter

    svc = client.app.state.services
    assert queue_limiter(svc) is svc.dispatcher.executor.limiter is memory_limiter()
    wid = uid("wf")
    client.post("/workflows", json=queued_spec(wid, [SHARED]))
    lim, q = memory_limiter(), limits(wid, SHARED)
    for sub in ("paid", "free"):
        d = lim.try_acquire(q, sub, tokens=100)
        assert d.allowed
        lim.settle(q, d, 40)
    assert not lim.try_acquire(q, "free", tokens=100, waiter="w1").allowed  # burst 2 used up
    got = client.get(f"/queues/{wid}:llm").json()
    assert got["granted"] == {"paid": 1, "free": 1, "default": 0}
    assert got["waiting"] == {"paid": 0, "free": 1, "default": 0}
    assert got["rate_per_second"] > 0 and got["requests_per_minute"] > 0
    assert got["tokens_per_minute"] > 0 and got["tokens_available"] == pytest.approx(6000 - 80, abs=50)


def test_a_real_run_is_counted_on_its_queue(make_client, api_env, openai_server):
    api_env.setenv("OPENAI_API_KEY", "sk-test-api-key-0123456789")
    api_env.setenv("OPENAI_BASE_URL", openai_server.base_url)
    openai_server.set_usage(30, 20)
    client = make_client()
    wid = uid("run")
    assert client.post("/workflows", json=queued_spec(wid, [SHARED], llm_queue="llm")).status_code == 201
    for sub in ("paid", "free", "paid"):
        r = client.post(f"/workflows/{wid}/runs", json={"input": {"user_input": "hi", "metadata": {"sub_queue": sub}}})
        assert wait_run(client, r.json()["run_id"])["status"] == "succeeded"
    got = client.get(f"/queues/{wid}:llm").json()
    assert got["granted"] == {"paid": 2, "free": 1, "default": 0}
    assert got["tokens_per_minute"] > 0
    # the settled usage (3 x 50) is what the bucket lost
    assert got["tokens_available"] == pytest.approx(6000 - 150, abs=60)


def test_metrics_expose_the_queue_gauges(client):
    wid = uid("m")
    client.post("/workflows", json=queued_spec(wid, [SHARED, IMAGES]))
    lim, q = memory_limiter(), limits(wid, SHARED)
    lim.try_acquire(q, "paid")
    lim.try_acquire(q, "paid")
    assert not lim.try_acquire(q, "free", waiter="w").allowed
    text = client.get("/metrics").text
    label = f'queue="{wid}:llm"'
    assert f'agentflow_queue_waiting{{{label},sub_queue="free"}} 1.0' in text
    assert f'agentflow_queue_granted_total{{{label},sub_queue="paid"}} 2.0' in text
    assert f"agentflow_queue_limit_per_second{{{label}}} 4.0" in text
    assert f"agentflow_queue_limit_tokens_per_minute{{{label}}} 6000.0" in text
    for name in ("rate_per_second", "requests_per_minute", "tokens_per_minute"):
        assert f"agentflow_queue_{name}{{{label}}}" in text
    assert f'agentflow_queue_limit_per_second{{queue="{wid}:images"}} 2.0' in text
    assert "agentflow_runs{" in text or "agentflow_database_up" in text  # the rest is still there
    assert text.count("# TYPE agentflow_queue_waiting gauge") == 1


def test_limiter_down_is_503_and_metrics_still_answer(client):
    class Down:
        def stats(self, limits):
            raise LimiterUnavailable("Redis is not reachable")

    wid = uid("wf")
    client.post("/workflows", json=queued_spec(wid, [SHARED]))
    client.app.state.services.extra["queue_limiter"] = Down()
    body = assert_error_shape(client.get("/queues"), 503)
    assert "rate limiter unavailable" in body["detail"]
    assert_error_shape(client.get(f"/queues/{wid}:llm"), 503)
    r = client.get("/metrics")
    assert r.status_code == 200 and f'queue="{wid}:llm"' not in r.text


def test_tenants_see_only_their_queues(tmp_path):
    from tests.security.conftest import secure_api

    with secure_api(tmp_path / "home") as api:
        a, b = uid("a"), uid("b")
        assert api.call("POST", "/workflows", "acme", json=queued_spec(a, [SHARED])).status_code == 201
        assert api.call("POST", "/workflows", "globex", json=queued_spec(b, [IMAGES])).status_code == 201
        assert [q["id"] for q in api.call("GET", "/queues", "acme", "viewer").json()["items"]] == [f"{a}:llm"]
        assert [q["id"] for q in api.call("GET", "/queues", "globex", "viewer").json()["items"]] == [f"{b}:images"]
        assert api.call("GET", f"/queues/{b}:images", "acme").status_code == 404
        assert api.call("GET", "/queues", "acme", None).status_code == 401
        metrics = api.call("GET", "/metrics", "acme", "operator").text
        assert f'queue="acme/{a}:llm"' in metrics and b not in metrics  # budgets are per tenant


@pytest.mark.redis
def test_distributed_mode_reads_the_workers_redis_limiter(make_client):
    """With REDIS_URL the route reads the same Redis state the node workers write."""
    from tests.needs import REDIS_URL, need_redis

    need_redis(REDIS_URL)
    import redis

    from agentflow.api.routes.queues import queue_limiter
    from agentflow.ratelimit.redis import RedisLimiter
    from agentflow.runs.events import MemoryEventBus

    class NoBroker:  # the routes under test never dispatch
        mode, bus = "distributed", MemoryEventBus()

        def submit(self, run_id): raise AssertionError("not used")
        def cancel(self, run_id): pass
        def execute(self, run_id, timeout): raise AssertionError("not used")
        def close(self): pass

    prefix = f"af:rl:test:{uuid.uuid4().hex[:10]}"
    try:
        client = make_client(dispatcher=NoBroker(), REDIS_URL=REDIS_URL, AGENTFLOW_RATELIMIT_PREFIX=prefix,
                             AGENTFLOW_AUTH="off")
        lim = queue_limiter(client.app.state.services)
        assert isinstance(lim, RedisLimiter) and lim.key_prefix == prefix
        wid = uid("d")
        client.post("/workflows", json=queued_spec(wid, [SHARED]))
        worker_side = RedisLimiter(REDIS_URL, key_prefix=prefix)   # what a node worker holds
        q = limits(wid, SHARED)
        d = worker_side.try_acquire(q, "paid", tokens=100)
        worker_side.settle(q, d, 70)
        worker_side.try_acquire(q, "free", tokens=100)
        assert not worker_side.try_acquire(q, "free", tokens=100, waiter="k").allowed
        got = client.get(f"/queues/{wid}:llm").json()
        assert got["granted"] == {"paid": 1, "free": 1, "default": 0}
        assert got["waiting"]["free"] == 1
        assert got["tokens_per_minute"] > 0
        assert f'agentflow_queue_waiting{{queue="{wid}:llm",sub_queue="free"}} 1.0' in client.get("/metrics").text
    finally:
        r = redis.Redis.from_url(REDIS_URL)
        for k in r.scan_iter(match=prefix + ":*", count=1000):
            r.delete(k)


def test_two_tenants_workflows_with_one_id_share_no_budget(tmp_path, openai_server):
    """Budgets are scoped by tenant and workflow (graph/step.py limit_namespace): acme's runs
    are charged to acme's queue only, though globex has a workflow with the same id."""
    from agentflow.graph.step import limit_namespace
    from tests.security.conftest import secure_api

    assert limit_namespace("wf") == limit_namespace("wf", "default") == "wf"
    assert limit_namespace("wf", "acme") == "acme/wf" != limit_namespace("wf", "globex")
    openai_server.set_usage(30, 20)
    with secure_api(tmp_path / "home", OPENAI_API_KEY="sk-test-api-key-0123456789",
                    OPENAI_BASE_URL=openai_server.base_url) as api:
        wid = uid("same")
        for tenant in ("acme", "globex"):
            assert api.call("POST", "/workflows", tenant, json=queued_spec(wid, [SHARED], llm_queue="llm")).status_code == 201
        for _ in range(2):
            r = api.call("POST", f"/workflows/{wid}/runs", "acme",
                         json={"input": {"user_input": "hi", "metadata": {"sub_queue": "paid"}}})
            assert api.wait_run(r.json()["run_id"], "acme")["status"] == "succeeded"
        assert api.call("GET", f"/queues/{wid}:llm", "acme").json()["granted"]["paid"] == 2
        assert api.call("GET", f"/queues/{wid}:llm", "globex").json()["granted"]["paid"] == 0
