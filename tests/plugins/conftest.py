"""Fixtures of the plugin tests; `plugin_venv` (shared with tests/browser) is in tests/conftest.py."""

from __future__ import annotations

from tests.distributed.conftest import dist_env  # noqa: F401 - a fixture the distributed plugin test uses
