"""Studio's run panel answers a run that waits for a person (a `human` node)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
from playwright.sync_api import Page, expect

from tests.browser.test_studio import open_studio

APPROVAL = {"id": "browser-approval", "name": "Approval in Studio", "start_node": "input",
            "nodes": [{"id": "input", "type": "input"},
                      {"id": "ask", "type": "human", "config": {"prompt": "Refund {user_input}?",
                                                                "choices": ["approve", "reject"]}},
                      {"id": "final", "type": "aggregator", "config": {"fields": ["approval"]}}],
            "edges": [{"from": "input", "to": "ask"}, {"from": "ask", "to": "final"}]}


def test_a_waiting_run_is_answered_in_the_run_panel(page: Page, artifacts: Path):
    assert httpx.post(f"{page.base_url}/workflows", json=APPROVAL, timeout=10).status_code in (200, 201)
    open_studio(page)
    page.get_by_test_id("workflow-item-browser-approval").click()
    expect(page.get_by_test_id("workflow-id")).to_have_text("browser-approval")
    page.get_by_test_id("tab-run").click()
    page.get_by_test_id("run-input").fill("order 42")
    page.get_by_test_id("run-start").click()
    expect(page.get_by_test_id("run-status")).to_have_attribute("data-status", "waiting", timeout=30_000)
    form = page.get_by_test_id("approval-ask")
    expect(form.get_by_test_id("approval-prompt")).to_have_text("Refund order 42?")
    form.get_by_test_id("approval-values").fill('{"note": "customer is right"}')
    page.screenshot(path=str(artifacts / "run-waiting.png"))
    form.get_by_test_id("approval-choice-approve").click()
    expect(page.get_by_test_id("run-status")).to_have_attribute("data-status", "succeeded", timeout=30_000)
    expect(page.get_by_test_id("approval-ask")).to_have_count(0)
    final_state = json.loads(page.get_by_test_id("run-final-state").inner_text())
    answer = final_state["approval"]
    assert answer["choice"] == "approve" and answer["values"] == {"note": "customer is right"} and answer["by"]
