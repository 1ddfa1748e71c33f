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


@pytest.fixture(scope="session")
def plugin_venv(tmp_path_factory):
    """A fresh venv with the example plugin and a broken one pip-installed (tests/plugins/venv.py)."""
    from tests.plugins.venv import make_plugin_venv

    return make_plugin_venv(tmp_path_factory.mktemp("plugin-venv") / "venv")
