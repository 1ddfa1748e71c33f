"""Studio's views of versions and runs, in a real browser against a real `agentflow serve`:
the History tab (structural diff drawn on the canvas, restore), trace replay (step, play,
scrub, re-run from a step), live token streaming in the run panel, and the dashboard page.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.browser.test_studio import open_studio, preview, set_id

TRIAGE_NODES = ("input", "router", "writer", "painter", "orders", "final")


# ---------------------------------------------------------------- helpers


def api_headers(base: str) -> dict[str, str]:
    """A bearer token when the server hands one to local clients (auth on), else none."""
    try:
        res = httpx.get(f"{base}/auth/local-token", timeout=5)
        if res.status_code == 200 and res.json().get("token"):
            return {"Authorization": f"Bearer {res.json()['token']}"}
    except (httpx.HTTPError, ValueError):
        pass
    return {}


def run_via_api(base: str, workflow_id: str, text: str, customer: str = "alice") -> dict:
    """Start a run over the REST API and wait for its end."""
    headers = api_headers(base)
    res = httpx.post(f"{base}/workflows/{workflow_id}/runs", headers=headers, timeout=10,
                     json={"input": {"user_input": text, "metadata": {"customer": customer}}})
    assert res.status_code == 202, res.text
    run_id = res.json()["run_id"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        run = httpx.get(f"{base}/runs/{run_id}", headers=headers, timeout=10).json()
        if run["status"] in ("succeeded", "failed", "cancelled"):
            return run
        time.sleep(0.2)
    pytest.fail(f"run {run_id} did not end within 60 s")


def start_run(page: Page, text: str, customer: str = "alice") -> str:
    page.get_by_test_id("tab-run").click()
    page.get_by_test_id("run-input").fill(text)
    page.get_by_test_id("run-metadata").fill(json.dumps({"customer": customer}))
    page.get_by_test_id("run-start").click()
    expect(page.get_by_test_id("run-id")).not_to_have_text("")
    return page.get_by_test_id("run-id").inner_text()


def replay_position(page: Page) -> tuple[int, int]:
    m = re.search(r"step (\d+) / (\d+)", page.get_by_test_id("replay-position").inner_text())
    assert m, page.get_by_test_id("replay-position").inner_text()
    return int(m.group(1)), int(m.group(2))


@pytest.fixture
def slow_stream(openai_srv):
    """The test OpenAI server waits between streamed chunks, so a stream is seen mid-way."""
    before = openai_srv.stream_delay
    openai_srv.stream_delay = 0.25
    try:
        yield openai_srv
    finally:
        openai_srv.stream_delay = before


# ---------------------------------------------------------------- versions


def test_history_diff_on_canvas_and_restore(page: Page, triage_path: Path, artifacts: Path):
    triage = json.loads(triage_path.read_text())
    open_studio(page)
    page.get_by_test_id("import-file").set_input_files(str(triage_path))
    page.get_by_test_id("tab-properties").click()
    set_id(page, "wf-id", "triage-history")
    page.get_by_test_id("btn-save").click()
    expect(page.get_by_test_id("workflow-version")).to_have_text("v1")
    v1 = preview(page)

    # Version 2: the writer's prompt changes, the painter goes, a summary node comes.
    v2 = json.loads(json.dumps(v1))
    v2["nodes"] = [n for n in v2["nodes"] if n["id"] != "painter"]
    v2["nodes"][2]["config"]["prompt"] = "Answer in one line.\n\n{user_input}"
    v2["nodes"].append({"id": "summary", "type": "aggregator", "config": {"fields": ["text_result"], "output_key": "summary"}})
    v2["edges"] = [{"from": "input", "to": "router"}, {"from": "input", "to": "orders"},
                   {"from": "router", "to": "writer"}, {"from": "writer", "to": "final"},
                   {"from": "writer", "to": "summary"}, {"from": "orders", "to": "final"}]
    page.get_by_test_id("json-preview").fill(json.dumps(v2, indent=2))
    expect(page.get_by_test_id("node-summary")).to_be_visible()
    page.get_by_test_id("btn-save").click()
    expect(page.get_by_test_id("workflow-version")).to_have_text("v2")

    # Compare v1 -> v2 from the History tab (the toolbar opens it).
    page.get_by_test_id("btn-history").click()
    expect(page.get_by_test_id("history-version-2")).to_be_visible()
    expect(page.get_by_test_id("history-from")).to_have_value("1")
    expect(page.get_by_test_id("history-to")).to_have_value("2")
    page.get_by_test_id("history-compare").click()
    summary = page.get_by_test_id("diff-summary")
    expect(summary).to_have_attribute("data-status", "done")
    expect(page.get_by_test_id("diff-node-changed-writer")).to_contain_text("config.prompt")
    expect(page.get_by_test_id("diff-node-removed-painter")).to_be_visible()
    expect(page.get_by_test_id("diff-node-added-summary")).to_be_visible()
    expect(page.get_by_test_id("diff-edges")).to_contain_text("writer → summary")

    # The canvas draws v2 with the removed painter as a ghost, each node marked.
    expect(page.get_by_test_id("canvas-overlay")).to_have_attribute("data-kind", "diff")
    expect(page.get_by_test_id("node-writer")).to_have_attribute("data-diff", "changed")
    expect(page.get_by_test_id("node-summary")).to_have_attribute("data-diff", "added")
    expect(page.get_by_test_id("node-painter")).to_have_attribute("data-diff", "removed")
    for unchanged in ("input", "router", "orders", "final"):
        expect(page.get_by_test_id(f"node-{unchanged}")).not_to_have_attribute("data-diff", re.compile(".*"))
    expect(page.locator('[data-testid^="edge-label-"][data-from="writer"][data-to="summary"]')).to_have_attribute("data-diff", "added")
    expect(page.locator('[data-testid^="edge-label-"][data-from="router"][data-to="painter"]').first).to_have_attribute("data-diff", "removed")
    page.wait_for_timeout(300)
    page.screenshot(path=str(artifacts / "history-diff.png"))

    # Closing the diff gives the document (v2) back, unmarked.
    page.get_by_test_id("canvas-overlay-close").click()
    expect(page.get_by_test_id("canvas-overlay")).to_have_count(0)
    expect(page.get_by_test_id("node-painter")).to_have_count(0)
    expect(page.get_by_test_id("node-writer")).not_to_have_attribute("data-diff", re.compile(".*"))

    # Restore v1: saved as v3, the canvas is v1 again.
    page.get_by_test_id("history-restore-1").click()
    expect(page.get_by_test_id("workflow-version")).to_have_text("v3")
    expect(page.get_by_test_id("history-version-3")).to_be_visible()
    expect(page.locator(".react-flow__node")).to_have_count(len(triage["nodes"]))
    for node_id in TRIAGE_NODES:
        expect(page.get_by_test_id(f"node-{node_id}")).to_be_visible()
    expect(page.get_by_test_id("node-summary")).to_have_count(0)
    restored = preview(page)
    assert [n["id"] for n in restored["nodes"]] == [n["id"] for n in v1["nodes"]]
    assert restored["nodes"][2]["config"]["prompt"] == v1["nodes"][2]["config"]["prompt"]
    assert restored["edges"] == v1["edges"]

    # v1 and v3 are the same graph.
    page.get_by_test_id("tab-history").click()
    page.get_by_test_id("history-from").select_option("1")
    page.get_by_test_id("history-to").select_option("3")
    page.get_by_test_id("history-compare").click()
    expect(page.get_by_test_id("diff-count")).to_have_text("no differences")


# ---------------------------------------------------------------- trace replay


def test_trace_replay_steps_scrubs_and_reruns(page: Page, artifacts: Path):
    open_studio(page, "?workflow=support-triage")
    expect(page.get_by_test_id("node-router")).to_be_visible()
    run_id = start_run(page, "Where is my keyboard order? Please explain.")
    expect(page.get_by_test_id("run-status")).to_have_attribute("data-status", "succeeded", timeout=60_000)
    final_state = json.loads(page.get_by_test_id("run-final-state").inner_text())

    page.get_by_test_id("run-replay").click()
    panel = page.get_by_test_id("replay-panel")
    expect(panel).to_have_attribute("data-status", "done")
    expect(page.get_by_test_id("replay-run-id")).to_have_text(run_id)
    expect(page.get_by_test_id("canvas-overlay")).to_have_attribute("data-kind", "replay")
    steps = int(panel.get_attribute("data-steps"))
    assert steps >= 4  # input, router, writer, orders, final (no painter for a text request)

    # Step through: each step highlights its node and shows the state after it.
    seen_nodes, seen_states = [], []
    for i in range(steps):
        expect(page.get_by_test_id("replay-position")).to_have_text(f"step {i + 1} / {steps}")
        node = page.get_by_test_id("replay-current-node").inner_text()
        expect(page.get_by_test_id(f"node-{node}")).to_have_attribute("data-replay", "current")
        for earlier in seen_nodes:
            if earlier != node:
                expect(page.get_by_test_id(f"node-{earlier}")).to_have_attribute("data-replay", re.compile("done|failed"))
        seen_nodes.append(node)
        seen_states.append(json.loads(page.get_by_test_id("replay-state").inner_text()))
        if i == min(3, steps - 2):  # mid-run: done, current and pending nodes
            page.wait_for_timeout(300)
            page.screenshot(path=str(artifacts / "replay.png"))
        if i < steps - 1:
            page.get_by_test_id("replay-forward").click()
    assert seen_nodes[0] == "input" and seen_nodes[-1] == "final"
    assert "painter" not in seen_nodes
    expect(page.get_by_test_id("node-painter")).to_have_attribute("data-replay", "pending")
    assert len({json.dumps(s, sort_keys=True) for s in seen_states}) > 2  # the state grows step by step
    assert "intent" not in seen_states[0] and seen_states[seen_nodes.index("router")]["intent"] == "text"
    expect(page.get_by_test_id("replay-forward")).to_be_disabled()

    # Back one step, then scrub: the start, then the end shows the run's final state.
    page.get_by_test_id("replay-back").click()
    assert replay_position(page) == (steps - 1, steps)
    slider = page.get_by_test_id("replay-slider")
    slider.focus()
    page.keyboard.press("Home")
    expect(page.get_by_test_id("replay-position")).to_have_text(f"step 1 / {steps}")
    expect(page.get_by_test_id("node-input")).to_have_attribute("data-replay", "current")
    expect(page.get_by_test_id("node-final")).to_have_attribute("data-replay", "pending")
    page.keyboard.press("End")
    expect(page.get_by_test_id("replay-position")).to_have_text(f"step {steps} / {steps}")
    expect(page.get_by_test_id("node-final")).to_have_attribute("data-replay", "current")
    assert json.loads(page.get_by_test_id("replay-final-state").inner_text()) == final_state
    assert json.loads(page.get_by_test_id("replay-state").inner_text()) == final_state

    # Play from the start: the cursor moves by itself and stops at the end.
    page.get_by_test_id("replay-first").click()
    page.get_by_test_id("replay-play").click()
    expect(page.get_by_test_id("replay-pause")).to_be_visible()
    expect(page.get_by_test_id("replay-position")).to_have_text(f"step 2 / {steps}", timeout=5_000)
    expect(page.get_by_test_id("replay-position")).to_have_text(f"step {steps} / {steps}", timeout=15_000)
    expect(page.get_by_test_id("replay-play")).to_be_visible()

    # Re-run from the writer with an edited state: a new run, followed in the Run tab.
    page.get_by_test_id(f"replay-step-{seen_nodes.index('writer')}").click()
    expect(page.get_by_test_id("replay-current-node")).to_have_text("writer")
    state = json.loads(page.get_by_test_id("rerun-state").input_value())
    assert state["intent"] == "text" and "text_result" not in state
    state["user_input"] = "Rewritten question about a mouse"
    page.get_by_test_id("rerun-state").fill(json.dumps(state, indent=2))
    page.get_by_test_id("rerun-start").click()
    expect(page.get_by_test_id("run-panel")).to_be_visible()
    expect(page.get_by_test_id("run-parent")).to_have_text(run_id)
    expect(page.get_by_test_id("run-id")).not_to_have_text(run_id)
    expect(page.get_by_test_id("canvas-overlay")).to_have_count(0)
    expect(page.get_by_test_id("run-status")).to_have_attribute("data-status", "succeeded", timeout=60_000)
    rerun_state = json.loads(page.get_by_test_id("run-final-state").inner_text())
    # The test LLM echoes the start of its prompt: the edited input reached the writer.
    assert "Rewritten" in json.dumps(rerun_state["text_result"])
    assert rerun_state["intent"] == "text"


# ---------------------------------------------------------------- streaming


def test_streamed_tokens_show_before_the_run_ends(page: Page, slow_stream):
    open_studio(page, "?workflow=support-triage")
    expect(page.get_by_test_id("node-writer")).to_be_visible()
    page.get_by_test_id("tab-run").click()
    expect(page.get_by_test_id("run-stream")).to_be_checked()
    start_run(page, "Tell me about the opening hours of the shop and the refund policy")
    # Tokens appear under the writer's step, with the node marked streaming, while the run runs.
    page.wait_for_function(
        """() => {
            const text = document.querySelector('[data-testid="run-stream-writer"]')?.textContent ?? '';
            const status = document.querySelector('[data-testid="run-status"]')?.getAttribute('data-status');
            const node = document.querySelector('[data-testid="node-writer"]');
            return text.includes('Answer') && status === 'running' && node?.getAttribute('data-streaming') === 'true';
        }""", timeout=30_000)
    partial = page.get_by_test_id("run-stream-writer").inner_text()
    expect(page.get_by_test_id("run-status")).to_have_attribute("data-status", "succeeded", timeout=60_000)
    full = page.get_by_test_id("run-stream-writer").inner_text()
    assert len(full) > len(partial.strip()) or full.strip() == partial.strip()
    final_state = json.loads(page.get_by_test_id("run-final-state").inner_text())
    assert final_state["text_result"].split() == full.split()
    expect(page.get_by_test_id("node-writer")).not_to_have_attribute("data-streaming", "true")


# ---------------------------------------------------------------- dashboard


def test_dashboard_shows_the_runs_made(page: Page, studio_url: str, artifacts: Path):
    made = [run_via_api(studio_url, "support-triage", text)
            for text in ("Where is my order?", "Please draw a cat", "Explain both and draw it")]
    assert all(r["status"] == "succeeded" for r in made)

    open_studio(page)
    page.get_by_test_id("btn-dashboard").click()
    expect(page).to_have_url(re.compile(r"/dashboard/"))
    dash = page.get_by_test_id("dashboard")
    expect(dash).to_have_attribute("data-status", "done")
    page.get_by_test_id("dash-range-1h").click()
    expect(page).to_have_url(re.compile(r"range=1h"))
    expect(dash).to_have_attribute("data-status", "done")

    def figure(testid: str) -> float:
        return float(page.get_by_test_id(testid).get_attribute("data-value") or "nan")

    assert figure("dash-kpi-runs") >= len(made)
    assert figure("dash-kpi-tokens") > 0
    assert figure("dash-kpi-p50") > 0
    assert float(page.get_by_test_id("dash-status-succeeded").get_attribute("data-value")) >= len(made)
    row = page.locator('[data-testid="dash-workflow-row"][data-workflow="support-triage"]')
    expect(row).to_have_count(1)
    assert int(row.get_attribute("data-runs")) >= len(made)
    assert int(row.get_attribute("data-tokens")) > 0
    assert float(page.get_by_test_id("dash-chart-runs").get_attribute("data-total")) >= len(made)
    assert float(page.get_by_test_id("dash-chart-tokens").get_attribute("data-total")) > 0
    expect(page.locator('[data-testid="dash-node-row"][data-node="writer"]').first).to_be_visible()
    expect(page.locator('[data-testid="dash-source-row"][data-source="gpt"]').first).to_be_visible()

    # Only this workflow: its figures are the workflow's row.
    page.get_by_test_id("dash-workflow").select_option("support-triage")
    expect(page).to_have_url(re.compile(r"workflow=support-triage"))
    expect(dash).to_have_attribute("data-status", "done")
    expect(page.get_by_test_id("dash-kpi-runs")).to_have_attribute("data-value", row.get_attribute("data-runs"))
    expect(page.locator('[data-testid="dash-workflow-row"]')).to_have_count(1)

    # A reload keeps the range and the workflow; the week includes the hour.
    page.reload()
    expect(page.get_by_test_id("dash-workflow")).to_have_value("support-triage")
    expect(page.get_by_test_id("dash-range-1h")).to_have_attribute("aria-pressed", "true")
    page.get_by_test_id("dash-workflow").select_option("")
    page.get_by_test_id("dash-range-7d").click()
    expect(dash).to_have_attribute("data-status", "done")
    assert figure("dash-kpi-runs") >= len(made)
    page.wait_for_timeout(300)
    page.screenshot(path=str(artifacts / "dashboard.png"), full_page=True)
    page.get_by_test_id("dash-back").click()
    expect(page.get_by_test_id("canvas")).to_be_visible()
