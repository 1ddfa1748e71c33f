"""The example plugin installed into a fresh virtualenv (tests/plugins/venv.py), once per session."""

from __future__ import annotations

import pytest

from tests.distributed.conftest import dist_env  # noqa: F401 - a fixture the distributed plugin test uses
from tests.plugins.venv import make_plugin_venv


@pytest.fixture(scope="session")
def plugin_venv(tmp_path_factory):
    return make_plugin_venv(tmp_path_factory.mktemp("plugin-venv") / "venv")
