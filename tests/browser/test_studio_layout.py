"""Every Studio page at 1280x800 and 1920x1080: nothing spills out of its box or overlaps
in the toolbar, the page never scrolls sideways; and the run panel's number columns keep
apart (its tokens and cost once read "28$0.00000"). Screenshots go to artifacts/."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import run_triage

SIZES = [(1280, 800), (1920, 1080)]
TABS = ["properties", "queues", "sources", "json", "problems", "run", "history", "replay"]

# Elements whose content spills out of a box that does not clip or scroll it, and toolbar
# items that overlap each other. Deliberately overflowing parts (React Flow's own panes,
# screen-reader-only text) are skipped.
OVERFLOW_JS = """
() => {
  const out = [];
  const describe = (el) => (el.dataset.testid ? `[data-testid=${el.dataset.testid}]` : el.tagName.toLowerCase() +
    (typeof el.className === 'string' && el.className ? '.' + el.className.trim().split(/\\s+/).slice(0, 3).join('.') : '')) +
    ` "${(el.innerText || '').trim().slice(0, 30)}"`;
  const doc = document.documentElement;
  if (doc.scrollWidth > window.innerWidth + 1) out.push(`page scrolls sideways: ${doc.scrollWidth} > ${window.innerWidth}`);
  if (doc.scrollHeight > window.innerHeight + 1 && location.pathname === '/')  // the designer fills the window
    out.push(`page scrolls down: ${doc.scrollHeight} > ${window.innerHeight}`);
  for (const el of document.querySelectorAll('body *')) {
    if (el.closest('.react-flow__renderer, .react-flow__minimap, .sr-only, svg, option, select')) continue;
    const style = getComputedStyle(el);
    if (style.display === 'inline' || style.display === 'none' || style.visibility === 'hidden') continue;
    const clips = (v) => v === 'hidden' || v === 'auto' || v === 'scroll' || v === 'clip';
    if (!clips(style.overflowX) && el.scrollWidth > el.clientWidth + 2 && el.clientWidth > 0
        && !(el.tagName === 'INPUT' || el.tagName === 'TEXTAREA'))
      out.push(`${describe(el)} spills ${el.scrollWidth - el.clientWidth}px to the side`);
  }
  const bar = document.querySelector('header');
  if (bar) {
    if (bar.scrollWidth > bar.clientWidth + 1) out.push(`toolbar overflows by ${bar.scrollWidth - bar.clientWidth}px`);
    const items = [...bar.children].filter((c) => c.getBoundingClientRect().width > 0);
    for (let i = 0; i < items.length; i++) for (let j = i + 1; j < items.length; j++) {
      const a = items[i].getBoundingClientRect(), b = items[j].getBoundingClientRect();
      if (a.left < b.right - 1 && b.left < a.right - 1 && a.top < b.bottom - 1 && b.top < a.bottom - 1)
        out.push(`toolbar items overlap: ${describe(items[i])} / ${describe(items[j])}`);
    }
  }
  if (bar) {
    // one line each: a label that wraps in a 48 px toolbar runs over its neighbours
    for (const el of bar.querySelectorAll('*')) {
      if (el.children.length || !(el.innerText || '').trim()) continue;
      const r = document.createRange();
      r.selectNodeContents(el);
      const tops = new Set([...r.getClientRects()].map((x) => Math.round(x.top)));
      if (tops.size > 1) out.push(`${describe(el)} wraps onto ${tops.size} lines in the toolbar`);
    }
    const name = bar.querySelector('[data-testid=workflow-name]');
    if (name && name.scrollWidth > name.clientWidth + 1) out.push(`the workflow name is cut: ${name.value}`);
  }
  const tabs = document.querySelector('[role=tablist]');
  if (tabs && tabs.scrollWidth > tabs.clientWidth + 1) out.push(`the tabs do not fit: ${tabs.scrollWidth} > ${tabs.clientWidth}`);
  return out;
}
"""


def problems(page: Page) -> list[str]:
    return page.evaluate(OVERFLOW_JS)


@pytest.mark.parametrize("size", SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
def test_every_studio_page_fits(page: Page, artifacts: Path, size):
    width, height = size
    page.set_viewport_size({"width": width, "height": height})
    page.goto(page.base_url + "/?workflow=support-triage")
    expect(page.get_by_test_id("node-writer")).to_be_visible()
    found: dict[str, list[str]] = {}
    for tab in TABS:
        page.get_by_test_id(f"tab-{tab}").click()
        expect(page.get_by_test_id(f"panel-{tab}")).to_be_visible()
        if tab == "properties":
            page.get_by_test_id("node-writer").click()
        if tab == "history":  # a version saved without a name shows no stray text (a "0" once)
            row = page.get_by_test_id("history-version-1")
            expect(row).to_be_visible()
            assert "0" not in [line.strip() for line in row.inner_text().splitlines()], row.inner_text()
        page.wait_for_timeout(150)
        found[tab] = problems(page)
        page.screenshot(path=str(artifacts / f"layout-{width}x{height}-{tab}.png"))
    page.goto(page.base_url + "/dashboard/")
    page.wait_for_load_state("networkidle")
    page.wait_for_timeout(300)
    found["dashboard"] = problems(page)
    for chart in page.locator("figure[data-testid^=dash-chart-]").all():  # no axis label twice
        ticks = chart.get_by_test_id("chart-tick").evaluate_all("els => els.map(e => e.textContent)")
        assert len(ticks) == len(set(ticks)) >= 2, ticks
    page.screenshot(path=str(artifacts / f"layout-{width}x{height}-dashboard.png"), full_page=True)
    found = {k: v for k, v in found.items() if v}
    assert not found, f"at {width}x{height}: {found}"


def test_run_panel_keeps_tokens_and_cost_apart(page: Page, artifacts: Path):
    page.set_viewport_size({"width": 1280, "height": 800})
    page.goto(page.base_url + "/?workflow=support-triage")
    expect(page.get_by_test_id("node-writer")).to_be_visible()
    run_triage(page)
    gaps = page.evaluate("""() => [...document.querySelectorAll('[data-testid^=run-step-tokens-]')].map((cell) => {
        const text = (el) => { const r = document.createRange(); r.selectNodeContents(el); return r.getBoundingClientRect(); };
        const cost = cell.nextElementSibling;
        return {tokens: cell.innerText, cost: cost.innerText, gap: text(cost).left - text(cell).right,
                wrapped: text(cost).height > 20 || text(cell).height > 20};
    })""")
    assert any(g["tokens"] not in ("–", "0") for g in gaps), gaps  # the LLM steps report tokens
    for g in gaps:
        assert g["gap"] >= 8 and not g["wrapped"], gaps
    assert not problems(page)
    page.wait_for_timeout(200)
    page.get_by_test_id("panel-run").screenshot(path=str(artifacts / "run-panel.png"))
