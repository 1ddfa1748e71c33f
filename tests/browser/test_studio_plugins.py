"""Studio with a plugin installed: `agentflow serve` runs from the venv the example plugin
was pip-installed into (tests/plugins/venv.py), from the same Studio build, so the plugin's
node types reach the palette and forms through GET /node-types at runtime, and the
plugins page lists it and the broken plugin next to it."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.plugins.venv import embedded_env
from tests.servers.agentflow_serve import AgentflowServe


@pytest.fixture(scope="module")
def studio_url(plugin_venv, tmp_path_factory):
    """Overrides conftest's server: this module's Studio is served from the plugin venv."""
    home = tmp_path_factory.mktemp("plugin-studio")
    srv = AgentflowServe(embedded_env(home), home / "serve.log", timeout=90, python=plugin_venv.python).start()
    yield srv.url
    srv.stop()


def test_the_plugin_is_in_the_palette_and_gets_a_form(page: Page, artifacts: Path):
    page.set_viewport_size({"width": 1600, "height": 1000})
    page.goto(page.base_url + "/")
    expect(page.get_by_test_id("canvas")).to_be_visible()
    item = page.get_by_test_id("palette-text_stats")
    expect(item).to_be_visible()
    expect(item).to_have_attribute("data-origin", "plugin")
    expect(item).to_contain_text("Count characters, words, lines and sentences")
    expect(page.get_by_test_id("palette-regex_extract")).to_be_visible()
    expect(page.get_by_test_id("palette-llm")).to_have_attribute("data-origin", "builtin")
    expect(page.get_by_test_id("palette-broken_node")).to_have_count(0)

    item.drag_to(page.get_by_test_id("canvas"), target_position={"x": 500, "y": 300})
    node = page.locator('[data-testid^="node-text_stats"]').first
    expect(node).to_be_visible()
    node.click()
    page.get_by_test_id("tab-properties").click()
    expect(page.get_by_test_id("prop-config-text")).to_be_visible()
    page.get_by_test_id("prop-config-output_key").fill("1 bad")
    expect(page.get_by_test_id("prop-config-output_key-error")).to_be_visible()  # checked against the plugin's schema
    page.screenshot(path=str(artifacts / "plugin-palette.png"))


def test_the_plugins_page_lists_installed_and_broken_plugins(page: Page, artifacts: Path):
    page.goto(page.base_url + "/")
    page.get_by_test_id("btn-plugins").click()
    page.wait_for_url("**/plugins/")
    row = page.get_by_test_id("plugin-agentflow-text-tools")
    expect(row).to_contain_text("0.1.0")
    expect(row).to_contain_text("node type regex_extract, node type text_stats")
    expect(row).to_contain_text("loaded")
    broken = page.get_by_test_id("plugin-agentflow-broken-plugin")
    expect(broken.get_by_test_id("plugin-error")).to_contain_text("broken_node failed to load: ImportError")
    expect(page.get_by_test_id("node-type-text_stats")).to_contain_text("agentflow.text")
    expect(page.get_by_test_id("node-type-llm")).to_contain_text("built-in")
    page.screenshot(path=str(artifacts / "plugins-page.png"))
