"""Fixtures for the REST API tests: a fresh app on a private SQLite database per test."""

from __future__ import annotations

from typing import Callable

import pytest
from fastapi.testclient import TestClient


@pytest.fixture
def api_env(tmp_path, monkeypatch):
    """Environment of an embedded-mode server with its own AGENTFLOW_HOME."""
    monkeypatch.setenv("AGENTFLOW_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setenv("AGENTFLOW_LOAD_EXAMPLES", "0")
    monkeypatch.delenv("AGENTFLOW_MAX_BODY_BYTES", raising=False)
    return monkeypatch


@pytest.fixture
def make_client(api_env) -> Callable[..., TestClient]:
    """make_client(**env) -> a started TestClient (closed at teardown)."""
    from agentflow.api.main import create_app
    from agentflow.settings import Settings

    clients: list[TestClient] = []

    def make(dispatcher=None, raise_server_exceptions: bool = True, **env: str) -> TestClient:
        for key, value in env.items():
            api_env.setenv(key, value)
        app = create_app(Settings(), dispatcher=dispatcher)
        client = TestClient(app, raise_server_exceptions=raise_server_exceptions)
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in reversed(clients):
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client) -> TestClient:
    return make_client()
