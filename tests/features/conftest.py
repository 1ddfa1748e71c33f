"""Fixtures for the issue-8 feature tests: the in-process API (TestClient on a private
SQLite store), the triage environment (test OpenAI server + Postgres shop), and a real
`agentflow serve` subprocess for the SDK."""

from __future__ import annotations

import os

import pytest

from tests.api.conftest import api_env, client, make_client  # noqa: F401  (fixtures)
from tests.servers.agentflow_serve import AgentflowServe, free_port

CANARY = "sk-features-canary-0123456789"


@pytest.fixture
def triage_api(api_env, openai_server, shop_db_pg):
    """Environment for running the reference spec through the in-process API."""
    api_env.setenv("OPENAI_API_KEY", CANARY)
    api_env.setenv("OPENAI_BASE_URL", openai_server.base_url)
    api_env.setenv("SHOP_DSN", shop_db_pg)
    return openai_server


@pytest.fixture(scope="module")
def serve_factory(tmp_path_factory):
    """serve(**env) -> a running `agentflow serve` (embedded mode) on a free port; stopped
    at the end of the test module."""
    served: list[AgentflowServe] = []
    tmp_path = tmp_path_factory.mktemp("serve")

    def serve(**extra_env: str) -> AgentflowServe:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
        env.update(AGENTFLOW_HOME=str(tmp_path / f"serve-home-{port}"), AGENTFLOW_LOAD_EXAMPLES="0",
                   PYTHONUNBUFFERED="1", **extra_env)
        server = AgentflowServe(env, tmp_path / f"serve-{port}.log", "--log-level", "warning", port=port)
        served.append(server)
        return server.start()

    yield serve
    for server in served:
        server.stop()
