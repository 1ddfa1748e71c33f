"""Studio with auth on: local mode (the default of `agentflow serve`) hands Studio the
local admin token; with AGENTFLOW_AUTH=required, Studio opened as `/#token=<jwt>` works,
runs and follows a run live over the event stream (fetch with the Authorization header,
the token never in a URL), and without a token gets nothing."""

from __future__ import annotations

import os
import re
import shutil
import tempfile

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS, run_triage
from tests.needs import missing
from tests.servers.agentflow_serve import AgentflowServe, server_env

SECRET = "browser-auth-secret-0123456789abcdef"
pytestmark = [pytest.mark.browser]  # a missing browser fails each test (tests/browser/conftest.py)


def test_local_mode_studio_sends_the_local_token(page):
    requests = []
    page.on("request", lambda r: requests.append((r.url, r.headers.get("authorization"))))
    page.goto(page.base_url + "/")
    expect(page.get_by_test_id("workflow-item-support-triage")).to_be_visible()
    assert any(url.endswith("/auth/local-token") for url, _ in requests)
    api_calls = [(u, a) for u, a in requests if re.search(r"/workflows(\?|$)", u)]
    assert api_calls and all(a and a.startswith("Bearer ") for _, a in api_calls), api_calls


@pytest.fixture(scope="module")
def required_server(tmp_path_factory, openai_srv, shop_dsn):
    if os.environ.get("AGENTFLOW_TEST_STUDIO_URL"):
        missing("needs a server of its own (AGENTFLOW_AUTH=required), not AGENTFLOW_TEST_STUDIO_URL")
    home = tmp_path_factory.mktemp("afhome-required")
    env = server_env(home, AGENTFLOW_AUTH="required", AGENTFLOW_JWT_SECRET=SECRET, OPENAI_BASE_URL=openai_srv.base_url,
                     OPENAI_API_KEY="test-key", SHOP_DSN=shop_dsn, AGENTFLOW_LOAD_EXAMPLES="1")
    with AgentflowServe(env, home / "serve.log", timeout=90, script=True) as served:
        yield served.url, home


@pytest.fixture
def fresh_page(playwright_instance):
    profile = tempfile.mkdtemp(prefix="af-chromium-auth-")
    ctx = playwright_instance.chromium.launch_persistent_context(
        profile, executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True,
        viewport={"width": 1600, "height": 900})
    ctx.set_default_timeout(15_000)
    pg = ctx.pages[0] if ctx.pages else ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    try:
        yield pg
    finally:
        ctx.close()
        shutil.rmtree(profile, ignore_errors=True)
    assert not errors, errors


def _token(home) -> str:
    from agentflow.api.auth import issue_token
    from agentflow.settings import Settings

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AGENTFLOW_JWT_SECRET", SECRET)
        mp.setenv("AGENTFLOW_HOME", str(home))
        return issue_token("default", "admin", 3600, "browser", settings=Settings())


def test_required_mode_without_a_token_shows_nothing(required_server, fresh_page):
    url, _ = required_server
    statuses = []
    fresh_page.on("response", lambda r: statuses.append((r.url, r.status)))
    fresh_page.goto(url + "/")
    fresh_page.wait_for_timeout(2000)
    expect(fresh_page.get_by_test_id("workflow-item-support-triage")).to_have_count(0)
    assert any(s == 401 for u, s in statuses if "/workflows" in u), statuses
    assert any(u.endswith("/auth/local-token") and s == 404 for u, s in statuses)


def test_required_mode_with_a_token_designs_and_runs_live(required_server, fresh_page):
    url, home = required_server
    token = _token(home)
    requests = []
    fresh_page.on("request", lambda r: requests.append((r.url, r.headers.get("authorization"))))
    fresh_page.set_viewport_size({"width": 1920, "height": 1080})
    fresh_page.goto(f"{url}/#token={token}")
    item = fresh_page.get_by_test_id("workflow-item-support-triage")
    expect(item).to_be_visible()
    assert token not in fresh_page.url  # taken out of the address bar
    assert fresh_page.evaluate("localStorage.getItem('agentflow.token')") == token
    item.click()
    expect(fresh_page.get_by_test_id("node-writer")).to_be_visible()

    run_triage(fresh_page)
    expect(fresh_page.get_by_test_id("node-final")).to_have_attribute("data-status", "succeeded")

    streams = [(u, a) for u, a in requests if re.search(r"/runs/[^/]+/events$", u)]
    assert streams, "Studio did not open the event stream"
    assert all(a == f"Bearer {token}" for _, a in streams), streams
    assert not any(token in u for u, _ in requests), "the token went into a URL"
    # a reload keeps working with the stored token
    fresh_page.reload()
    expect(fresh_page.get_by_test_id("workflow-item-support-triage")).to_be_visible()
