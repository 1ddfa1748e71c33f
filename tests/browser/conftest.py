"""Browser tests of Studio: Debian's chromium driven by Playwright, against a real
`agentflow serve` (embedded mode) with the test OpenAI-compatible server behind it.

They fail, with the reason, when /usr/bin/chromium is missing (`make test` installs it:
scripts/ensure_tools.sh), when Studio is not built (`make studio`), or when the Python
playwright package is absent; only `make test-fast` skips them (tests/needs.py).
`AGENTFLOW_TEST_STUDIO_URL=http://127.0.0.1:PORT` runs them against a server you started.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
from pathlib import Path

import pytest

from tests.needs import missing
from tests.servers.agentflow_serve import AgentflowServe

ROOT = Path(__file__).resolve().parents[2]
STUDIO_INDEX = ROOT / "studio" / "out" / "index.html"
CHROMIUM = Path(os.environ.get("AGENTFLOW_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
EXAMPLES = ROOT.parent / "shared" / "examples"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
SHOP_ROWS = [
    ("alice", "keyboard", "shipped"),
    ("alice", "mouse", "processing"),
    ("bob", "monitor", "delivered"),
]


def _skip_reason() -> str | None:
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing: apt-get install -y chromium"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright Python package is not installed (pip install -e '.[dev]')"
    if not os.environ.get("AGENTFLOW_TEST_STUDIO_URL") and not STUDIO_INDEX.is_file():
        return "Studio is not built: run `make studio` (cd studio && npm ci && npm run build)"
    return None


def _drives_browser(item) -> bool:
    here = Path(__file__).resolve().parent
    fixtures = getattr(item, "fixturenames", ())
    return here in Path(str(item.fspath)).resolve().parents and ("page" in fixtures or "playwright_instance" in fixtures)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if _drives_browser(item):
            item.add_marker(pytest.mark.browser)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """Before the fixtures start a server: a missing browser fails the test (tests/needs.py)."""
    if _drives_browser(item):
        reason = _skip_reason()
        if reason:
            missing(reason)


@pytest.fixture(scope="session")
def openai_srv():
    from tests.servers.openai_server import OpenAIServer

    with OpenAIServer() as srv:
        yield srv


@pytest.fixture(scope="session")
def shop_dsn(tmp_path_factory):
    path = tmp_path_factory.mktemp("shop") / "shop.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY AUTOINCREMENT, customer TEXT, item TEXT, status TEXT)")
    conn.executemany("INSERT INTO orders (customer, item, status) VALUES (?, ?, ?)", SHOP_ROWS)
    conn.commit()
    conn.close()
    return f"sqlite:///{path}"


@pytest.fixture(scope="session")
def studio_url(tmp_path_factory, openai_srv, shop_dsn):
    """Base URL of a running `agentflow serve` (API and Studio on one port)."""
    external = os.environ.get("AGENTFLOW_TEST_STUDIO_URL")
    if external:
        yield external.rstrip("/")
        return
    home = tmp_path_factory.mktemp("afhome")
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(AGENTFLOW_HOME=str(home), OPENAI_BASE_URL=openai_srv.base_url, OPENAI_API_KEY="test-key",
               SHOP_DSN=shop_dsn, PYTHONUNBUFFERED="1")
    try:
        served = AgentflowServe(env, home / "serve.log", timeout=90, script=True).start()
    except (RuntimeError, TimeoutError) as e:
        pytest.fail(str(e))
    try:
        yield served.url
    finally:
        served.stop()


@pytest.fixture(scope="session")
def playwright_instance():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        yield p


@pytest.fixture
def page(playwright_instance, studio_url):
    """A page in a fresh chromium profile; fails the test on uncaught page errors."""
    profile = tempfile.mkdtemp(prefix="af-chromium-")
    ctx = playwright_instance.chromium.launch_persistent_context(
        profile, executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True,
        viewport={"width": 1600, "height": 900}, accept_downloads=True)
    ctx.set_default_timeout(15_000)
    pg = ctx.pages[0] if ctx.pages else ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.base_url = studio_url  # type: ignore[attr-defined]
    try:
        yield pg
    finally:
        ctx.close()
        shutil.rmtree(profile, ignore_errors=True)
    assert not errors, f"uncaught errors in the page: {errors}"


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def triage_path() -> Path:
    path = EXAMPLES / "triage.json"
    if not path.is_file():
        path = ROOT / "examples" / "triage.json"
    if not path.is_file():
        missing("triage.json not found (shared/examples or examples/)")
    return path


def run_triage(page) -> None:
    """Start the support-triage example from the open page's run panel; wait until it succeeds."""
    from playwright.sync_api import expect

    page.get_by_test_id("tab-run").click()
    page.get_by_test_id("run-input").fill("Please draw a cat and explain both")
    page.get_by_test_id("run-metadata").fill('{"customer": "alice"}')
    page.get_by_test_id("run-start").click()
    expect(page.get_by_test_id("run-status")).to_have_attribute("data-status", "succeeded", timeout=90_000)
