"""Queue limits through the whole distributed stack: runs, real Celery workers, the Redis limiter.

One worker cluster for the module: a run driver (`--pool threads --concurrency 32`: drivers
mostly wait) and 4 LLM worker processes (`--queues agentflow.llm --concurrency 4`, prefork).
Three workflows `input -> writer (llm, queue q)`, one per queue configuration of
`tests/ratelimit/fullstack.py` (messages/s + burst with 3:1 sub-queues, requests/min + burst
with 3:1 sub-queues, tokens/min), are kept saturated at the same time; the figures are taken
from the arrival times and the reported usage at the fake OpenAI server, over one steady
window of AF_RL_WINDOW s (20). While they run, `GET /queues` (an API app in distributed
mode, reading the same Redis) must show every queue with tasks waiting and a live rate near
its limit. About 40 s in all.

Needs PostgreSQL and Redis on 127.0.0.1 (skips otherwise), like tests/distributed. The
figures are timing: a machine whose CPUs are saturated by other work can push the rates
below the 5% band (waiters come back later than the burst tolerance).
"""

from __future__ import annotations


import pytest

from tests.distributed.conftest import Workers, dist_env  # noqa: F401  (module fixture)
from tests.ratelimit import fullstack as fs

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(300)]

DRIVER_THREADS = 32
# unfinished runs kept per lane (26 <= DRIVER_THREADS in all): enough that each queue always
# has tasks waiting for a grant, through the few hundred ms a run needs around its call
INFLIGHT = {"paid": 7, "free": 4, "tpm": 4}


@pytest.fixture(scope="module")
def server():
    with fs.TaggedServer() as srv:
        yield srv


@pytest.fixture(scope="module")
def cluster(dist_env, server, tmp_path_factory):  # noqa: F811
    extra = {"OPENAI_API_KEY": "sk-test-ratelimit-0000", "OPENAI_BASE_URL": server.base_url,
             # countdowns stay far below this; a long one must not be redelivered meanwhile
             "AGENTFLOW_VISIBILITY_TIMEOUT": "60"}
    dist_env.update(extra)
    w = Workers(dist_env, tmp_path_factory.mktemp("rl-workerlogs"))
    try:
        w.start("driver", "runs", concurrency=DRIVER_THREADS, pool="threads")
        w.start("llm", "agentflow.llm", concurrency=4)
        w.wait_ready(["driver", "llm"])
        yield w
    finally:
        w.stop_all()


@pytest.fixture(scope="module")
def api(dist_env):  # noqa: F811
    """The API in distributed mode on the cluster's database and Redis (the test submits
    runs through Celery itself, so the dispatcher is never used)."""
    from fastapi.testclient import TestClient

    from agentflow.api.main import create_app
    from agentflow.runs.events import MemoryEventBus
    from agentflow.settings import Settings

    class NoSubmit:
        mode, bus = "distributed", MemoryEventBus()

        def submit(self, run_id): raise AssertionError("not used")
        def cancel(self, run_id): pass
        def execute(self, run_id, timeout): raise AssertionError("not used")
        def close(self): pass

    settings = Settings(DATABASE_URL=dist_env["DATABASE_URL"], REDIS_URL=dist_env["REDIS_URL"],
                        AGENTFLOW_HOME=dist_env["AGENTFLOW_HOME"], AGENTFLOW_AUTH="off")
    with TestClient(create_app(settings, dispatcher=NoSubmit())) as client:
        yield client


@pytest.fixture(scope="module")
def store(dist_env):  # noqa: F811
    from agentflow.store.db import session_factory
    from agentflow.store.runs import RunStore

    return RunStore(session_factory(dist_env["DATABASE_URL"]))


@pytest.fixture(scope="module")
def measured(cluster, dist_env, server, api, store):  # noqa: F811
    from agentflow.ratelimit.redis import RedisLimiter
    from agentflow.workers.app import make_celery

    celery = make_celery(dist_env["REDIS_URL"])

    def start_run(spec: dict, run_input: dict, workflow_id: str) -> str:
        run_id = store.create(spec, run_input, workflow_id=workflow_id)
        celery.send_task("agentflow.run", args=[run_id], task_id=run_id, queue="runs")
        return run_id

    # the workers' limiter: same Redis, default key prefix
    return fs.measure("celery", api, server, store, RedisLimiter(dist_env["REDIS_URL"]), start_run, INFLIGHT)


def test_every_limit_holds_through_celery_workers(measured):
    failed = fs.check(measured.figures)
    assert not failed, "; ".join(failed) + f"\nfigures: {measured.figures.summary()}"


def test_runs_succeed_and_each_called_the_server_once(measured, server, store):
    fs.check_runs(measured, server, store)


def test_queues_api_shows_live_figures_from_redis(measured):
    fs.check_queues_api(measured)
