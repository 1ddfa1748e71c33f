"""Two API replicas behind nginx (contract 10): any replica serves any request.

Started here: a fresh Postgres database, a private redis-server, the stand-in OpenAI server,
real workers, two `agentflow serve` processes (distributed mode, auth required, one shared
AGENTFLOW_JWT_SECRET, AGENTFLOW_TRUSTED_PROXIES=127.0.0.1) and one nginx running the shipped
deploy/nginx/agentflow.conf (only its upstream lines and listen port replaced).

Clients reach nginx from different loopback addresses (127.0.x.y): nginx passes each
one's address in X-Forwarded-For, which the replicas trust from nginx alone.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
import uuid

import httpx
import pytest

from agentflow.workers.launch import WorkerProcesses
from tests.scale.harness import Api, FreshDatabase, Nginx, base_env, plain_redis, stop_everything, wait_until

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(400)]

PER_MINUTE, BURST = 120, 20        # both API limits, per tenant and per client address
SECRET = "nginx-replicas-" + "k" * 32


def spec() -> dict:
    return {
        "id": "behind-nginx", "name": "Behind nginx", "start_node": "input",
        "nodes": [{"id": "input", "type": "input"},
                  {"id": "writer", "type": "llm", "source": "gpt",
                   "config": {"prompt": "{user_input}", "output_key": "text_result", "max_tokens": 30}}],
        "edges": [{"from": "input", "to": "writer"}],
        "sources": [{"id": "gpt", "kind": "llm", "provider": "openai", "model": "gpt-4o-mini",
                     "api_key_env": "OPENAI_API_KEY", "base_url_env": "OPENAI_BASE_URL"}],
    }


def token_for(tenant: str) -> str:
    from agentflow.api.auth import issue_token
    from agentflow.settings import Settings

    return issue_token(tenant=tenant, role="admin", settings=Settings(AGENTFLOW_JWT_SECRET=SECRET))


def client(base_url: str, tenant: str, address: str = "127.0.0.1") -> httpx.Client:
    return httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {token_for(tenant)}"}, timeout=30,
                        transport=httpx.HTTPTransport(local_address=address))


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    from tests.servers.openai_server import OpenAIServer

    root = tmp_path_factory.mktemp("nginx")
    db = FreshDatabase()
    llm = OpenAIServer(delay=0.3).start()
    procs, workers = [], None
    try:
        redis_proc, redis_url = plain_redis(root)
        procs.append(redis_proc)
        env = base_env(root / "home", DATABASE_URL=db.url, REDIS_URL=redis_url, AGENTFLOW_JWT_SECRET=SECRET,
                       OPENAI_API_KEY="sk-test-nginx-0000", OPENAI_BASE_URL=llm.base_url,
                       AGENTFLOW_RATE_TENANT_PER_MINUTE=str(PER_MINUTE), AGENTFLOW_RATE_TENANT_BURST=str(BURST),
                       AGENTFLOW_RATE_IP_PER_MINUTE=str(PER_MINUTE), AGENTFLOW_RATE_IP_BURST=str(BURST))
        from agentflow.store.db import dispose_all, migrate

        migrate(db.url)
        dispose_all()
        workers = WorkerProcesses(env, root)
        workers.start("driver", "runs,agentflow.control", concurrency=16, pool="threads")
        workers.start("llm", "agentflow.llm", concurrency=4, pool="threads")
        api_env = dict(env, AGENTFLOW_TRUSTED_PROXIES="127.0.0.1")
        apis = [Api("api-a", api_env, root), Api("api-b", api_env, root)]
        procs += apis
        workers.wait_ready(["driver", "llm"])
        for api in apis:
            api.wait_healthy()
        nginx = Nginx(root, [a.port for a in apis])
        procs.append(nginx)
        yield apis, nginx, llm, workers
    finally:
        stop_everything(workers, procs, llm, db)


def sse_events(c: httpx.Client, run_id: str, timeout: float = 60) -> list[tuple[float, str, dict]]:
    """(arrival time, event, data) of one run's stream, until `end`."""
    events, kind = [], None
    with c.stream("GET", f"/runs/{run_id}/events", timeout=timeout) as r:
        assert r.status_code == 200, r.read()
        for line in r.iter_lines():
            if line.startswith("event:"):
                kind = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and kind:
                events.append((time.monotonic(), kind, json.loads(line.split(":", 1)[1])))
                if kind == "end":
                    return events
    raise AssertionError(f"stream ended without `end`: {events}")


def test_run_events_reach_a_stream_on_the_other_replica_and_through_nginx(stack):
    (a, b), nginx, _, _ = stack
    tenant = "sse-" + uuid.uuid4().hex[:6]
    with client(a.url, tenant) as ca, client(b.url, tenant) as cb, client(nginx.url, tenant) as cn:
        assert cn.post("/workflows", json=spec()).status_code == 201
        # submitted on one replica, followed on the other: token deltas are never stored,
        # so they can only come through Redis pub/sub from the worker
        for submit, follow in ((ca, cb), (cb, ca)):
            r = submit.post("/workflows/behind-nginx/runs", json={"input": {"user_input": "tell me a story"},
                                                                  "stream": True})
            assert r.status_code == 202, r.text
            events = sse_events(follow, r.json()["run_id"])
            kinds = [k for _, k, _ in events]
            assert "token" in kinds, kinds
            assert events[-1][2]["status"] == "succeeded"
        # through nginx: events arrive as they are sent (no proxy buffering), whichever
        # replica nginx picks for the stream
        for _ in range(2):
            r = cn.post("/workflows/behind-nginx/runs", json={"input": {"user_input": "again"}, "stream": True})
            assert r.status_code == 202, r.text
            events = sse_events(cn, r.json()["run_id"])
            assert events[-1][1] == "end" and events[-1][2]["status"] == "succeeded"
            first_live = next(t for t, k, d in events if k == "step" and d.get("status") == "running")
            assert events[-1][0] - first_live >= 0.2, "the stream was buffered: every event came at the end"


def _round_robin(clients: list[httpx.Client], n: int, forge: bool = False) -> tuple[int, list[str], float]:
    """n GET /workflows, one client after the other (then closed): (granted, refusal
    messages, seconds taken). `forge`: each request names another X-Forwarded-For."""
    t0, ok, refused = time.monotonic(), 0, []
    for i, c in enumerate(itertools.islice(itertools.cycle(clients), n)):
        if forge:
            c.headers["X-Forwarded-For"] = f"10.9.{i // 250}.{i % 250 + 1}"
        r = c.get("/workflows")
        if r.status_code == 200:
            ok += 1
        else:
            assert r.status_code == 429, r.text
            assert int(r.headers["Retry-After"]) >= 1
            refused.append(r.json()["detail"])
    took = time.monotonic() - t0
    for c in clients:
        c.close()
    return ok, refused, took


def _granted_at_most(seconds: float) -> float:
    return BURST + PER_MINUTE / 60 * seconds + 1


def test_tenant_limit_holds_across_replicas_and_addresses(stack):
    _, nginx, _, _ = stack
    tenant = "lim-" + uuid.uuid4().hex[:6]
    seen_before = len(nginx.upstreams_seen())
    # one tenant from 6 addresses (10 requests each: no address reaches its own burst)
    ok, refused, took = _round_robin([client(nginx.url, tenant, f"127.0.2.{i}") for i in range(1, 7)], 60)
    assert BURST <= ok <= _granted_at_most(took), (ok, took)
    assert refused and all("this tenant" in m for m in refused), refused[:3]
    assert len(set(nginx.upstreams_seen()[seen_before:])) == 2, "nginx must have used both replicas"


def test_address_limit_holds_across_replicas_and_ignores_a_forged_forwarded_for(stack):
    _, nginx, _, _ = stack
    # one address, 4 tenants (15 requests each), and a different forged X-Forwarded-For on
    # each request: nginx replaces the header with the address it saw
    clients = [client(nginx.url, "ip-" + uuid.uuid4().hex[:6], "127.0.3.1") for _ in range(4)]
    ok, refused, took = _round_robin(clients, 60, forge=True)
    assert BURST <= ok <= _granted_at_most(took), (ok, took)
    assert refused and all("this address" in m for m in refused), refused[:3]


def test_metrics_show_the_broker_queue_depth_an_autoscaler_reads(stack):
    """No worker here consumes agentflow.image: a run's image step waits in that queue, and
    every replica's /metrics says so (the gauge an HPA on queue depth scales with)."""
    _, nginx, _, _ = stack
    tenant = "depth-" + uuid.uuid4().hex[:6]
    painting = {"id": "paint", "name": "paint", "start_node": "input",
                "nodes": [{"id": "input", "type": "input"},
                          {"id": "painter", "type": "image", "source": "dalle",
                           "config": {"prompt": "{user_input}", "size": "1024x1024", "output_key": "image_result"}}],
                "edges": [{"from": "input", "to": "painter"}],
                "sources": [{"id": "dalle", "kind": "image", "provider": "openai", "model": "dall-e-3",
                             "api_key_env": "OPENAI_API_KEY", "base_url_env": "OPENAI_BASE_URL"}]}
    line = 'agentflow_broker_queue_messages{queue="agentflow.image"}'

    def depth(c: httpx.Client) -> float:
        text = c.get("/metrics").text
        return float(next(ln.split()[-1] for ln in text.splitlines() if ln.startswith(line)))

    with client(nginx.url, tenant) as c:
        assert c.post("/workflows", json=painting).status_code == 201
        before = depth(c)
        run_id = c.post("/workflows/paint/runs", json={"input": {"user_input": "a cat"}}).json()["run_id"]
        try:
            wait_until(lambda: depth(c) >= before + 1, 30, "the image step waiting in agentflow.image")
            assert depth(c) >= before + 1  # and so says the other replica (round robin)
            assert 'agentflow_broker_queue_messages{queue="runs"}' in c.get("/metrics").text
        finally:
            c.post(f"/runs/{run_id}/cancel")


def test_a_replica_killed_mid_load_costs_only_the_requests_in_flight(stack):
    (a, b), nginx, _, workers = stack
    tenants = ["load-" + uuid.uuid4().hex[:6] for _ in range(6)]
    clients = [client(nginx.url, t, f"127.0.4.{i + 1}") for i, t in enumerate(tenants)]
    for c in clients:
        assert c.post("/workflows", json=spec()).status_code == 201

    stop = threading.Event()
    killed_at: list[float] = []
    results: dict[str, list[tuple[float, int]]] = {"get": [], "post": []}
    accepted: list[tuple[httpx.Client, str]] = []
    lock = threading.Lock()

    def idempotent(c: httpx.Client, path: str) -> int:
        """GET with the client's retry: on a connection error or 502/503/504, up to 3 tries."""
        for attempt in range(3):
            try:
                r = c.get(path)
            except httpx.TransportError:
                time.sleep(0.2)
                continue
            if r.status_code not in (502, 503, 504) or attempt == 2:
                return r.status_code
            time.sleep(0.2)
        return 599  # never answered

    def load(c: httpx.Client) -> None:
        last_run = None
        for i in itertools.count():
            if stop.is_set():
                return
            status = idempotent(c, "/workflows/behind-nginx")
            with lock:
                results["get"].append((time.monotonic(), status))
            if last_run:
                status = idempotent(c, f"/runs/{last_run}")
                with lock:
                    results["get"].append((time.monotonic(), status))
            if i % 2 == 0:  # a submission: not idempotent, never retried
                try:
                    r = c.post("/workflows/behind-nginx/runs", json={"input": {"user_input": f"load {i}"}})
                    status = r.status_code
                except httpx.TransportError:
                    status = 599
                with lock:
                    results["post"].append((time.monotonic(), status))
                if status == 202:
                    last_run = r.json()["run_id"]
                    with lock:
                        accepted.append((c, last_run))
            time.sleep(1.3)  # under 2 requests/s per client and address: inside both API limits

    threads = [threading.Thread(target=load, args=(c,), daemon=True) for c in clients]
    for t in threads:
        t.start()
    time.sleep(5)
    a.kill()
    killed_at.append(time.monotonic())
    time.sleep(8)
    stop.set()
    for t in threads:
        t.join(60)

    kill = killed_at[0]
    gets, posts = results["get"], results["post"]
    assert len([1 for t, _ in gets if t > kill + 1]) >= 20, "too little load after the kill to mean anything"
    bad_gets = [(round(t - kill, 2), s) for t, s in gets if s >= 500]
    assert not bad_gets, f"idempotent requests that failed: {bad_gets}"
    bad_posts = [(round(t - kill, 2), s) for t, s in posts if s >= 500]
    # only submissions in flight on the killed replica (at most one per client) may fail,
    # and only at the kill
    assert len(bad_posts) <= len(clients) and all(-1 < dt < 5 for dt, _ in bad_posts), bad_posts
    assert all(s == 202 or s >= 500 for _, s in posts), [(round(t - kill, 2), s) for t, s in posts if s != 202]
    assert sum(1 for t, s in posts if s == 202 and t > kill + 1) >= 5, "submissions after the kill must succeed"

    # every accepted run ran to the end, whichever replica took it
    deadline = time.time() + 120
    pending = list(accepted)
    while pending and time.time() < deadline:
        c, run_id = pending[0]
        r = c.get(f"/runs/{run_id}")
        if r.status_code == 200 and r.json()["status"] in ("succeeded", "failed", "cancelled"):
            assert r.json()["status"] == "succeeded", r.json()["error"]
            pending.pop(0)
        else:
            time.sleep(0.5)
    assert not pending, f"{len(pending)} accepted runs never ended"
    for c in clients:
        c.close()
    print(f"replica kill: {len(gets)} GETs (0 failed), {len(posts)} POSTs, {len(bad_posts)} failed in flight "
          f"{bad_posts}, {len(accepted)} runs accepted and succeeded")
