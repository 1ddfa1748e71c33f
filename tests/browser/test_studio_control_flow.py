"""Studio builds a parent with a map node over a saved child workflow and watches it run.

Against a real `agentflow serve` (embedded mode) that saved the shipped examples, among them
the child workflow `ticket-summary`, whose LLM calls go to the test OpenAI-compatible server.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from playwright.sync_api import Page, expect

from .test_studio import add_nodes, connect, open_studio, preview, select_node, set_id


def test_build_a_map_over_a_child_workflow_and_watch_it_run(page: Page, artifacts: Path):
    open_studio(page)
    page.get_by_test_id("tab-properties").click()
    set_id(page, "wf-id", "map-built")
    page.get_by_test_id("wf-name").fill("Map built in the browser")

    add_nodes(page, (("input", "input", 140, 400), ("map", "each", 480, 400),
                     ("aggregator", "final", 820, 300), ("aggregator", "oops", 820, 560)))

    # the workflow picker lists the saved workflows (not this one)
    select_node(page, "each")
    picker = page.get_by_test_id("prop-config-workflow")
    expect(picker.locator("option[value='ticket-summary']")).to_have_count(1)
    picker.select_option("ticket-summary")
    expect(page.get_by_test_id("prop-config-version").locator("option[value='1']")).to_have_count(1)
    page.get_by_test_id("prop-config-over").fill("metadata.tickets")
    page.get_by_test_id("prop-config-input").fill("{item.text}")
    page.get_by_test_id("prop-config-output_key").fill("summaries")
    select_node(page, "final")
    page.get_by_test_id("prop-config-fields").fill("summaries")
    select_node(page, "oops")
    page.get_by_test_id("prop-config-fields").fill("error")

    connect(page, "input", "each")
    connect(page, "each", "final")
    connect(page, "each", "oops")
    # mark each -> oops as the error branch: drawn red and dashed, labelled "on error"
    page.get_by_test_id("edge-label-2-oops").click()
    page.get_by_test_id("tab-properties").click()
    page.get_by_test_id("edge-on_error").check()
    label = page.get_by_test_id("edge-label-2-oops")
    expect(label).to_have_attribute("data-on-error", "true")
    expect(label).to_have_text("on error")
    expect(page.locator(".react-flow__edge.edge-on-error")).to_have_count(1)

    # the queue editor has the concurrency cap and its key
    page.get_by_test_id("tab-queues").click()
    page.get_by_test_id("queue-add").click()
    set_id(page, "queue-queue_1-id", "per_customer")
    page.get_by_test_id("queue-per_customer-max_concurrency").fill("2")
    page.get_by_test_id("queue-per_customer-concurrency_key").fill("{metadata.customer}")

    built = preview(page)
    assert built["queues"] == [{"id": "per_customer", "max_concurrency": 2, "concurrency_key": "{metadata.customer}"}]
    assert built["edges"][2] == {"from": "each", "to": "oops", "on_error": True}
    assert built["nodes"][1]["config"] == {"workflow": "ticket-summary", "over": "metadata.tickets",
                                           "input": "{item.text}", "output_key": "summaries"}

    page.get_by_test_id("btn-save").click()
    expect(page.get_by_test_id("workflow-version")).to_have_text("v1")
    expect(page).to_have_url(re.compile(r"\?workflow=map-built$"))

    tickets = [{"text": f"ticket {i}: the parcel is late"} for i in range(6)]
    page.get_by_test_id("tab-run").click()
    page.get_by_test_id("run-metadata").fill(json.dumps({"customer": "acme", "tickets": tickets}))
    page.get_by_test_id("run-start").click()
    expect(page.get_by_test_id("run-status")).to_have_attribute("data-status", "succeeded", timeout=90_000)
    progress = page.get_by_test_id("run-children-each")
    expect(progress).to_have_attribute("data-done", "6", timeout=15_000)
    expect(progress).to_have_attribute("data-total", "6")
    expect(page.get_by_test_id("run-children-progress-each")).to_have_text("6 of 6 children done")
    expect(page.get_by_test_id("run-step-oops")).to_have_count(0)  # the error branch was not taken
    final_state = json.loads(page.get_by_test_id("run-final-state").inner_text())
    assert len(final_state["summaries"]) == 6
    parent_id = page.get_by_test_id("run-id").inner_text()
    page.screenshot(path=str(artifacts / "map-run.png"))

    # open a child: its own workflow and run, linked back to the parent
    page.locator('[data-testid="run-child-open"]').nth(2).click()
    expect(page).to_have_url(re.compile(r"\?workflow=ticket-summary$"))
    expect(page.get_by_test_id("run-status")).to_have_attribute("data-status", "succeeded")
    expect(page.get_by_test_id("node-summarize")).to_have_attribute("data-status", "succeeded")
    back = page.get_by_test_id("run-parent-open")
    expect(back).to_have_text(parent_id)
    back.click()
    expect(page).to_have_url(re.compile(r"\?workflow=map-built$"))
    expect(page.get_by_test_id("run-id")).to_have_text(parent_id)

    # the replay of the parent lists its children too
    page.get_by_test_id("run-replay").click()
    replay = page.get_by_test_id("replay-panel")
    expect(replay.get_by_test_id("run-children-each")).to_have_attribute("data-done", "6")
    expect(replay.get_by_test_id("run-children-progress-each")).to_have_text("6 of 6 children done")
