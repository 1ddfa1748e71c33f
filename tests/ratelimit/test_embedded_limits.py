"""Queue limits through the embedded stack: the API in embedded mode, its EmbeddedExecutor
(16 run threads) and the process-wide in-memory limiter.

The same three workflows, lanes, window (AF_RL_WINDOW s, 20) and checks as
`test_celery_limits.py` (see `tests/ratelimit/fullstack.py`): the rate of the messages/s and
requests/min queues within 5%, no 1 s window above rate + burst_size, tokens/min within 5%,
paid:free within 5% of 3:1, measured where the calls land (the fake OpenAI server). Runs are
started the way `POST /workflows/{id}/runs` starts them (store + dispatcher); `GET /queues`
must show the live figures of the executor's limiter meanwhile. About 30 s.
"""

from __future__ import annotations

import pytest

from tests.ratelimit import fullstack as fs

pytestmark = [pytest.mark.timeout(300)]

RUN_THREADS = 16
# unfinished runs per lane (16 = RUN_THREADS in all): a run waiting for its grant holds a
# run thread (embedded mode blocks in `acquire`), so more would only queue in the executor
INFLIGHT = {"paid": 4, "free": 3, "tpm": 2}


@pytest.fixture(scope="module")
def server():
    with fs.TaggedServer() as srv:
        yield srv


@pytest.fixture(scope="module")
def api(server, tmp_path_factory):
    from fastapi.testclient import TestClient

    from agentflow.api.main import create_app
    from agentflow.settings import Settings

    with pytest.MonkeyPatch.context() as mp:
        for name in ("DATABASE_URL", "REDIS_URL"):
            mp.delenv(name, raising=False)
        mp.setenv("OPENAI_API_KEY", "sk-test-ratelimit-0000")   # read by the runs from os.environ
        mp.setenv("OPENAI_BASE_URL", server.base_url)
        mp.setenv("AGENTFLOW_LOAD_EXAMPLES", "0")
        settings = Settings(AGENTFLOW_HOME=str(tmp_path_factory.mktemp("rl-embedded")), AGENTFLOW_AUTH="off",
                            AGENTFLOW_EMBEDDED_WORKERS=str(RUN_THREADS),
                            AGENTFLOW_RATE_TENANT_PER_MINUTE="0", AGENTFLOW_RATE_IP_PER_MINUTE="0")
        with TestClient(create_app(settings)) as client:
            yield client


@pytest.fixture(scope="module")
def measured(api, server):
    from agentflow.ratelimit import memory_limiter

    svc = api.app.state.services
    limiter = svc.dispatcher.executor.limiter
    assert limiter is memory_limiter(), "embedded runs must be charged to the process-wide limiter"

    def start_run(spec: dict, run_input: dict, workflow_id: str) -> str:
        run_id = svc.runs.create(spec, run_input, workflow_id=workflow_id)
        svc.dispatcher.submit(run_id)
        return run_id

    return fs.measure("embedded", api, server, svc.runs, limiter, start_run, INFLIGHT)


def test_every_limit_holds_in_embedded_mode(measured):
    failed = fs.check(measured.figures)
    assert not failed, "; ".join(failed) + f"\nfigures: {measured.figures.summary()}"


def test_runs_succeed_and_each_called_the_server_once(measured, server, api):
    fs.check_runs(measured, server, api.app.state.services.runs)


def test_queues_api_shows_live_figures_from_the_executors_limiter(measured):
    fs.check_queues_api(measured)
