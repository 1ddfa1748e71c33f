import os

import pytest

pytest_plugins = ["tests.fixtures_servers", "tests.skip_policy"]


@pytest.fixture
def af_home(tmp_path, monkeypatch):
    """A private AGENTFLOW_HOME (SQLite store) for tests that run workflows."""
    home = tmp_path / "afhome"
    monkeypatch.setenv("AGENTFLOW_HOME", str(home))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    from agentflow.settings import get_settings

    get_settings.cache_clear()
    yield home
    get_settings.cache_clear()


def pytest_report_header(config):
    return f"AgentFlow tests; REDIS_URL={os.environ.get('REDIS_URL', '-')}"
