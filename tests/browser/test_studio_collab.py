"""Live co-editing in Studio: two Chromium pages on one workflow against a real
`agentflow serve` with token auth (each page signs in with its own token, `/#token=`).

An edit in one page (add a node, connect it, rename the workflow) shows in the other within
a second; edits of different nodes made at the same time both survive; undo takes back only
one's own edit; the shared document survives a restart of the server; a viewer's page
watches but cannot change it; saving makes a version that names who edited.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS, STUDIO_INDEX
from tests.collab.conftest import SECRET, token
from tests.helpers import rules_spec
from tests.servers.agentflow_serve import AgentflowServe

pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]  # it uses no `page` fixture: mark it here

WID = "collab-demo"
LIVE = 1000  # ms: what a co-editor may wait to see an edit


class Server(AgentflowServe):
    """`agentflow serve` on a fixed port and database, so it can be restarted in place."""

    def __init__(self, tmp: Path, openai_url: str):
        import os

        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
        env.update({"AGENTFLOW_AUTH": "required", "AGENTFLOW_JWT_SECRET": SECRET,
                    "DATABASE_URL": f"sqlite:///{tmp / 'agentflow.db'}", "AGENTFLOW_HOME": str(tmp),
                    "AGENTFLOW_LOAD_EXAMPLES": "0", "OPENAI_BASE_URL": openai_url, "OPENAI_API_KEY": "test-key",
                    "PYTHONUNBUFFERED": "1"})
        super().__init__(env, tmp / "serve.log", script=True)

    def api(self, method: str, path: str, tok: str, **kw) -> httpx.Response:
        return httpx.request(method, self.url + path, headers={"Authorization": f"Bearer {tok}"}, timeout=15, **kw)


@pytest.fixture(scope="module")
def server(openai_srv):
    assert STUDIO_INDEX.is_file(), "Studio is not built: cd studio && npm ci && npm run build"
    tmp = Path(tempfile.mkdtemp(prefix="af-collab-"))
    srv = Server(tmp, openai_srv.base_url)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def browser(playwright_instance):
    b = playwright_instance.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
    yield b
    b.close()


@pytest.fixture
def open_as(browser, server):
    """open_as(subject, role) -> a page of its own (own storage) on the shared workflow."""
    contexts = []
    errors: list[str] = []

    def open_page(subject: str, role: str = "editor", viewport=(1600, 900), workflow: str = WID) -> Page:
        ctx = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]})
        ctx.set_default_timeout(15_000)
        contexts.append(ctx)
        page = ctx.new_page()
        page.on("pageerror", lambda e: errors.append(f"{subject}: {e}"))
        page.goto(f"{server.url}/?workflow={workflow}#token={token(role=role, subject=subject)}")
        expect(page.get_by_test_id("workflow-id")).to_have_text(workflow)
        expect(page.get_by_test_id("collab-status")).to_have_attribute("data-status", "live")
        return page

    yield open_page
    for ctx in contexts:
        ctx.close()
    assert not errors, f"uncaught errors in the pages: {errors}"


def spec_of(page: Page) -> dict:
    return page.evaluate("() => window.__agentflowStore.getState().spec")


def wait_spec(page: Page, predicate_js: str, timeout: int = LIVE) -> None:
    """Wait until `predicate_js` (a function of the spec) holds in the page's store."""
    page.wait_for_function(f"() => ({predicate_js})(window.__agentflowStore.getState().spec)", timeout=timeout)


def test_two_pages_edit_one_workflow_live(server, open_as, artifacts):
    alice_tok = token(subject="alice")
    assert server.api("POST", "/workflows", alice_tok, json=rules_spec(id=WID, name="Collab demo")).status_code == 201
    alice = open_as("alice")
    bob = open_as("bob")
    expect(alice.locator('[data-testid="collab-peer"][data-name="bob"]')).to_be_visible()
    expect(bob.locator('[data-testid="collab-peer"][data-name="alice"]')).to_be_visible()

    # ---- an edit in one page shows in the other within a second
    timings = {}
    start = time.monotonic()
    alice.get_by_test_id("palette-aggregator").click()
    new_id = alice.evaluate("() => window.__agentflowStore.getState().selectedNodes[0]")
    expect(bob.get_by_test_id(f"node-{new_id}")).to_be_visible(timeout=LIVE)
    timings["add node"] = time.monotonic() - start

    start = time.monotonic()
    alice.get_by_test_id(f"handle-out-final").drag_to(alice.get_by_test_id(f"handle-in-{new_id}"))
    wait_spec(bob, f"s => (s.edges || []).some(e => e.from === 'final' && e.to === {json.dumps(new_id)})")
    timings["connect"] = time.monotonic() - start

    start = time.monotonic()
    alice.get_by_test_id("workflow-name").fill("Edited together")
    expect(bob.get_by_test_id("workflow-name")).to_have_value("Edited together", timeout=LIVE)
    timings["rename"] = time.monotonic() - start
    print("seen by the other page after (s):", {k: round(v, 3) for k, v in timings.items()})

    # ---- positions are shared: alice arranges the nodes, bob's canvas follows
    alice.get_by_test_id("btn-layout").click()
    arranged = alice.evaluate("() => window.__agentflowStore.getState().spec.nodes.map(n => [n.id, n.position])")
    wait_spec(bob, f"s => JSON.stringify(s.nodes.map(n => [n.id, n.position])) === {json.dumps(json.dumps(arranged, separators=(',', ':')))}")
    bob.get_by_test_id("btn-fit").click()

    # ---- presence: bob sees alice's pointer and what she selected
    box = alice.get_by_test_id("canvas").bounding_box()
    alice.mouse.move(box["x"] + 300, box["y"] + 200)
    alice.mouse.move(box["x"] + 320, box["y"] + 210)
    expect(bob.locator('[data-testid="peer-cursor"][data-name="alice"]')).to_be_visible(timeout=LIVE)
    alice.get_by_test_id("node-route").click()
    expect(bob.locator('[data-testid="peer-selection"][data-name="alice"][data-node="route"]')).to_be_visible(timeout=LIVE)
    bob.get_by_test_id(f"node-{new_id}").click()
    bob.mouse.move(box["x"] + 500, box["y"] + 300)
    expect(alice.locator('[data-testid="peer-cursor"][data-name="bob"]')).to_be_visible(timeout=LIVE)
    alice.screenshot(path=str(artifacts / "collab-alice.png"))
    bob.screenshot(path=str(artifacts / "collab-bob.png"))

    # ---- simultaneous edits of different nodes both survive
    alice.evaluate("""() => { const st = window.__agentflowStore.getState();
        const n = st.spec.nodes.find(x => x.id === 'route');
        st.updateNode('route', {...n, config: {...n.config, default: 'from-alice'}}); }""")
    bob.evaluate("""() => { const st = window.__agentflowStore.getState();
        const n = st.spec.nodes.find(x => x.id === 'final');
        st.updateNode('final', {...n, config: {...n.config, fields: ['from-bob']}}); }""")
    both = ("s => s.nodes.find(n => n.id === 'route').config.default === 'from-alice'"
            " && JSON.stringify(s.nodes.find(n => n.id === 'final').config.fields) === '[\"from-bob\"]'")
    wait_spec(alice, both)
    wait_spec(bob, both)
    assert spec_of(alice) == spec_of(bob)

    # ---- undo takes back only one's own edit
    bob.get_by_test_id("btn-undo").click()
    for page in (alice, bob):
        wait_spec(page, "s => JSON.stringify(s.nodes.find(n => n.id === 'final').config.fields) !== '[\"from-bob\"]'"
                        " && s.nodes.find(n => n.id === 'route').config.default === 'from-alice'")

    # ---- the shared document survives a restart of the server
    expected = spec_of(alice)
    server.stop()
    expect(alice.get_by_test_id("collab-status")).not_to_have_attribute("data-status", "live", timeout=10_000)
    server.start()
    expect(alice.get_by_test_id("collab-status")).to_have_attribute("data-status", "live", timeout=15_000)
    carol = open_as("carol")  # a fresh page after the restart loads the document from the database
    wait_spec(carol, f"s => s.name === 'Edited together' && s.nodes.some(n => n.id === {json.dumps(new_id)})", 5000)
    assert spec_of(carol) == expected

    # ---- saving makes a version that says who saved it and who edited
    alice.get_by_test_id("btn-save").click()
    expect(alice.get_by_test_id("workflow-version")).to_have_text("v2")
    versions = server.api("GET", f"/workflows/{WID}/versions", alice_tok).json()["items"]
    assert versions[0]["author"] == "alice" and versions[0]["editors"] == ["alice", "bob"]
    alice.get_by_test_id("tab-history").click()
    expect(alice.get_by_test_id("panel-history")).to_contain_text("alice")
    expect(alice.get_by_test_id("panel-history")).to_contain_text("bob")


def test_a_viewer_page_watches_but_cannot_change_the_workflow(server, open_as, artifacts):
    editor_tok = token(subject="ed")
    assert server.api("PUT", "/workflows/watched", editor_tok,
                      json=rules_spec(id="watched", name="Watched")).status_code in (200, 201)
    ed = open_as("ed", workflow="watched")
    vic = open_as("vic", role="viewer", workflow="watched")
    expect(vic.get_by_test_id("collab-status")).to_contain_text("view only")

    vic.get_by_test_id("workflow-name").fill("Viewer was here")
    vic.get_by_test_id("palette-llm").click()
    expect(vic.get_by_test_id("workflow-name")).to_have_value("Watched")
    expect(vic.get_by_test_id("notice")).to_contain_text("not change it")
    ed.wait_for_timeout(LIVE)
    assert spec_of(ed)["name"] == "Watched" and len(spec_of(ed)["nodes"]) == 3

    ed.get_by_test_id("workflow-name").fill("Renamed by the editor")
    expect(vic.get_by_test_id("workflow-name")).to_have_value("Renamed by the editor", timeout=LIVE)
    late = open_as("late", workflow="watched")
    wait_spec(late, "s => s.name === 'Renamed by the editor' && s.nodes.length === 3", 5000)


def test_studio_works_alone_when_live_editing_is_refused(server, browser, artifacts):
    """The socket closed by the server with a code (here: a stand-in that refuses every
    collaboration socket as a foreign tenant would be): Studio says so, stops retrying,
    and editing, undo and saving work as without collaboration."""
    tok = token(subject="solo")
    assert server.api("PUT", "/workflows/solo", tok, json=rules_spec(id="solo", name="Solo")).status_code in (200, 201)
    ctx = browser.new_context(viewport={"width": 1280, "height": 800})
    page = ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    attempts = []

    def refuse(ws):
        attempts.append(ws.url)
        ws.close(code=4404, reason="workflow 'solo' not found")

    page.route_web_socket("**/collab", refuse)
    try:
        page.goto(f"{server.url}/?workflow=solo#token={tok}")
        status = page.get_by_test_id("collab-status")
        expect(status).to_have_attribute("data-status", "unavailable")
        expect(status).to_have_attribute("title", "Live editing is off: workflow 'solo' not found")
        page.get_by_test_id("workflow-name").fill("Solo, edited")
        page.get_by_test_id("btn-undo").click()  # the store's own undo: the rename goes
        expect(page.get_by_test_id("workflow-name")).to_have_value("Solo")
        page.get_by_test_id("btn-redo").click()
        page.get_by_test_id("btn-save").click()
        expect(page.get_by_test_id("workflow-version")).to_have_text("v2")
        saved = server.api("GET", "/workflows/solo", tok).json()["spec"]
        assert saved["name"] == "Solo, edited"
        page.wait_for_timeout(1500)
        assert len(attempts) == 1, attempts  # refused for good: no reconnecting
    finally:
        ctx.close()
    assert not errors, errors
