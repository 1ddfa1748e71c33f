"""Studio in a real browser against a real `agentflow serve` (embedded mode).

The long test builds the support-triage workflow from an empty canvas with the mouse,
validates it (an injected error lands on its node), saves, reloads, runs it against the
test OpenAI-compatible server and watches every node turn succeeded.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

VIEWPORT = {"width": 1920, "height": 1080}


# ---------------------------------------------------------------- helpers


def open_studio(page: Page, query: str = "") -> None:
    page.set_viewport_size(VIEWPORT)
    page.goto(page.base_url + "/" + query)
    expect(page.get_by_test_id("canvas")).to_be_visible()
    expect(page.get_by_test_id("workflow-id")).not_to_have_text("new-workflow")


def drop(page: Page, node_type: str, x: int, y: int) -> None:
    """Drag a palette item onto the canvas at (x, y) of the canvas."""
    page.get_by_test_id(f"palette-{node_type}").drag_to(page.get_by_test_id("canvas"), target_position={"x": x, "y": y})


def add_nodes(page: Page, nodes) -> None:
    """Drop (node type, id, x, y) items from the palette and give each its id."""
    for node_type, new_id, x, y in nodes:
        drop(page, node_type, x, y)
        expect(page.get_by_test_id("node-properties")).to_be_visible()
        if new_id != node_type:
            set_id(page, "prop-id", new_id)
        expect(page.get_by_test_id(f"node-{new_id}")).to_be_visible()


def set_id(page: Page, testid: str, value: str) -> None:
    field = page.get_by_test_id(testid)
    field.fill(value)
    field.press("Enter")


def connect(page: Page, src: str, dst: str) -> None:
    page.get_by_test_id(f"handle-out-{src}").drag_to(page.get_by_test_id(f"handle-in-{dst}"))


def select_node(page: Page, node_id: str) -> None:
    page.get_by_test_id(f"node-{node_id}").click()
    page.get_by_test_id("tab-properties").click()
    expect(page.get_by_test_id("node-properties")).to_have_attribute("data-node", node_id)


def preview(page: Page) -> dict:
    page.get_by_test_id("tab-json").click()
    return json.loads(page.get_by_test_id("json-preview").input_value())


def strip_positions(spec: dict) -> dict:
    out = json.loads(json.dumps(spec))
    for node in out["nodes"]:
        node.pop("position", None)
    return out


# ---------------------------------------------------------------- tests


def test_designer_opens_with_the_example_workflows(page: Page, artifacts: Path):
    open_studio(page)
    # `agentflow serve` saves the shipped examples on start; Studio lists them.
    item = page.get_by_test_id("workflow-item-support-triage")
    expect(item).to_be_visible()
    for node_type in ("input", "router", "llm", "image", "db", "aggregator", "api"):
        expect(page.get_by_test_id(f"palette-{node_type}")).to_be_visible()
    item.click()
    expect(page).to_have_url(re.compile(r"\?workflow=support-triage$"))
    for node_id in ("input", "router", "writer", "painter", "orders", "final"):
        expect(page.get_by_test_id(f"node-{node_id}")).to_be_visible()
    select_node(page, "router")
    expect(page.get_by_test_id("prop-config-mode")).to_have_value("llm")
    page.wait_for_timeout(300)
    page.screenshot(path=str(artifacts / "designer.png"))


def test_build_validate_save_reload_and_run_triage(page: Page, artifacts: Path, triage_path: Path):
    triage = json.loads(triage_path.read_text())
    open_studio(page)

    # -- the workflow itself
    page.get_by_test_id("tab-properties").click()
    set_id(page, "wf-id", "triage-built")
    page.get_by_test_id("wf-name").fill("Support triage (built in the browser)")
    page.get_by_test_id("wf-description").fill(triage["description"])

    # -- sources (names of environment variables only)
    page.get_by_test_id("tab-sources").click()
    for kind, sid in (("llm", "gpt"), ("image", "dalle"), ("db", "shop")):
        page.get_by_test_id("source-add-kind").select_option(kind)
        page.get_by_test_id("source-add").click()
        set_id(page, f"source-{kind}-id", sid)
        expect(page.get_by_test_id(f"source-{sid}")).to_be_visible()
    for sid, model in (("gpt", "gpt-4o-mini"), ("dalle", "dall-e-3")):
        page.get_by_test_id(f"source-{sid}-provider").select_option("openai")
        page.get_by_test_id(f"source-{sid}-model").fill(model)
        page.get_by_test_id(f"source-{sid}-api_key_env").fill("OPENAI_API_KEY")
        page.get_by_test_id(f"source-{sid}-base_url_env").fill("OPENAI_BASE_URL")
    page.get_by_test_id("source-shop-driver").select_option("sqlite")
    page.get_by_test_id("source-shop-dsn_env").fill("SHOP_DSN")
    # A secret typed where a variable name belongs is flagged, never needed.
    page.get_by_test_id("source-gpt-api_key_env").fill("sk-live-123")
    expect(page.get_by_test_id("source-gpt")).to_contain_text("looks like a secret")
    page.get_by_test_id("source-gpt-api_key_env").fill("OPENAI_API_KEY")

    # -- queues, with inline validation
    page.get_by_test_id("tab-queues").click()
    page.get_by_test_id("queue-add").click()
    set_id(page, "queue-queue_1-id", "llm")
    page.get_by_test_id("queue-llm-max_requests_per_minute").fill("600")
    page.get_by_test_id("queue-llm-max_tokens_per_minute").fill("200000")
    page.get_by_test_id("queue-llm-burst_size").fill("0")
    expect(page.get_by_test_id("queue-llm-burst_size-error")).to_contain_text("≥ 1")
    page.get_by_test_id("queue-llm-burst_size").fill("10")
    expect(page.get_by_test_id("queue-llm-burst_size-error")).to_have_count(0)
    page.get_by_test_id("queue-llm-sub_queues-add").click()
    page.get_by_test_id("queue-llm-sub_queues-add").click()
    page.get_by_test_id("queue-llm-sub_queues-0-id").fill("paid")
    page.get_by_test_id("queue-llm-sub_queues-0-weight").fill("-3")
    expect(page.get_by_test_id("queue-llm-sub_queues-0-error")).to_contain_text("must be > 0")
    page.get_by_test_id("queue-llm-sub_queues-0-weight").fill("3")
    page.get_by_test_id("queue-llm-sub_queues-1-id").fill("free")
    expect(page.get_by_test_id("queue-llm-sub_queues-0-error")).to_have_count(0)
    expect(page.get_by_test_id("queue-llm")).to_contain_text("75%")
    page.get_by_test_id("queue-add").click()
    set_id(page, "queue-queue_2-id", "images")
    page.get_by_test_id("queue-images-max_messages_per_second").fill("2")
    page.get_by_test_id("queue-images-burst_size").fill("2")

    # -- nodes, dragged from the palette
    add_nodes(page, (("input", "input", 140, 420), ("router", "router", 430, 300),
                     ("llm", "writer", 740, 180), ("image", "painter", 740, 420),
                     ("db", "orders", 430, 640), ("aggregator", "final", 1050, 420)))
    expect(page.locator(".react-flow__node")).to_have_count(6)

    select_node(page, "router")
    page.get_by_test_id("prop-source").select_option("gpt")
    page.get_by_test_id("prop-queue").select_option("llm")
    page.get_by_test_id("prop-config-mode").select_option("llm")
    page.get_by_test_id("prop-config-output_key").fill("intent")
    page.get_by_test_id("prop-config-labels").fill("text\nimage\nboth")
    page.get_by_test_id("prop-config-prompt").fill(triage["nodes"][1]["config"]["prompt"])

    select_node(page, "writer")
    page.get_by_test_id("prop-source").select_option("gpt")
    page.get_by_test_id("prop-queue").select_option("llm")
    page.get_by_test_id("prop-config-prompt").fill(triage["nodes"][2]["config"]["prompt"])
    page.get_by_test_id("prop-config-output_key").fill("text_result")
    page.get_by_test_id("prop-config-max_tokens").fill("200")

    select_node(page, "painter")
    page.get_by_test_id("prop-source").select_option("dalle")
    page.get_by_test_id("prop-queue").select_option("images")
    page.get_by_test_id("prop-config-prompt").fill("{user_input}")
    page.get_by_test_id("prop-config-size").fill("1024x1024")
    page.get_by_test_id("prop-config-output_key").fill("image_result")

    select_node(page, "orders")
    page.get_by_test_id("prop-source").select_option("shop")
    page.get_by_test_id("prop-config-query").fill(triage["nodes"][4]["config"]["query"])
    page.get_by_test_id("prop-config-params-add").click()
    page.get_by_test_id("prop-config-params-key-0").fill("customer")
    page.get_by_test_id("prop-config-params-value-0").fill("{metadata.customer}")
    page.get_by_test_id("prop-config-output_key").fill("db_result")
    page.get_by_test_id("prop-config-max_rows").fill("50")

    select_node(page, "final")
    page.get_by_test_id("prop-config-fields").fill("intent\ntext_result\nimage_result\ndb_result")
    page.get_by_test_id("prop-config-output_key").fill("final_output")

    # -- edges, drawn handle to handle, in triage.json's order
    connect(page, "input", "router")
    connect(page, "input", "orders")
    connect(page, "router", "writer")
    connect(page, "router", "painter")
    for index, target, condition in ((2, "writer", "intent == 'text'"), (3, "painter", "intent == 'image'")):
        page.get_by_test_id(f"edge-label-{index}-{target}").dblclick()
        page.get_by_test_id(f"edge-input-{index}-{target}").fill(condition)
        page.get_by_test_id(f"edge-input-{index}-{target}").press("Enter")
        expect(page.get_by_test_id(f"edge-label-{index}-{target}")).to_contain_text(condition)
    connect(page, "router", "writer")  # a second router -> writer edge: made a fan-out below
    page.get_by_test_id("edge-label-4-writer").click()
    page.get_by_test_id("tab-properties").click()
    page.get_by_test_id("edge-to-painter").check()
    page.get_by_test_id("edge-condition").fill("intent == 'both'")
    expect(page.get_by_test_id("edge-label-4-painter")).to_contain_text("intent == 'both'")
    connect(page, "writer", "final")
    connect(page, "painter", "final")
    connect(page, "orders", "final")
    expect(page.locator(".react-flow__edge")).to_have_count(9)

    # What was built is triage.json (but for its id, name and the sqlite driver of the test DB).
    built = preview(page)
    expected = json.loads(json.dumps(triage))
    expected.update(id="triage-built", name="Support triage (built in the browser)")
    expected["sources"][2]["driver"] = "sqlite"
    assert all("position" in n for n in built["nodes"])
    assert strip_positions(built) == expected

    # -- an injected error lands on its node: edit the JSON, the canvas follows
    broken = json.loads(json.dumps(built))
    broken["nodes"][2]["source"] = "no-such-source"
    page.get_by_test_id("json-preview").fill(json.dumps(broken, indent=2))
    expect(page.get_by_test_id("json-error")).to_have_count(0)
    expect(page.get_by_test_id("node-writer")).to_contain_text("src no-such-source")
    page.get_by_test_id("btn-validate").click()
    expect(page.get_by_test_id("node-error-writer")).to_be_visible()
    expect(page.get_by_test_id("validation-status")).to_have_attribute("data-valid", "false")
    expect(page.locator('[data-testid="problem-item"][data-path="nodes[2].source"]')).to_be_visible()
    for other in ("input", "router", "painter", "orders", "final"):
        expect(page.get_by_test_id(f"node-error-{other}")).to_have_count(0)
    page.locator('[data-testid="problem-item"][data-path="nodes[2].source"]').click()
    expect(page.get_by_test_id("node-properties")).to_have_attribute("data-node", "writer")
    expect(page.get_by_test_id("prop-source-error")).to_be_visible()
    page.get_by_test_id("prop-source").select_option("gpt")
    page.get_by_test_id("btn-validate").click()
    expect(page.get_by_test_id("validation-status")).to_have_attribute("data-valid", "true")
    expect(page.get_by_test_id("node-error-writer")).to_have_count(0)

    # -- save, reload, find it again
    page.get_by_test_id("btn-save").click()
    expect(page.get_by_test_id("workflow-version")).to_have_text("v1")
    expect(page).to_have_url(re.compile(r"\?workflow=triage-built$"))
    page.reload()
    expect(page.get_by_test_id("workflow-item-triage-built")).to_be_visible()
    expect(page.get_by_test_id("workflow-version")).to_have_text("v1")
    expect(page.locator(".react-flow__node")).to_have_count(6)
    assert strip_positions(preview(page)) == expected

    # -- run it and watch every node turn succeeded
    page.get_by_test_id("tab-run").click()
    page.get_by_test_id("run-input").fill("Please draw a cat and explain both")
    page.get_by_test_id("run-metadata").fill('{"customer": "alice"}')
    page.get_by_test_id("run-start").click()
    expect(page.get_by_test_id("run-status")).to_have_attribute("data-status", "succeeded", timeout=90_000)
    for node_id in ("input", "router", "writer", "painter", "orders", "final"):
        expect(page.get_by_test_id(f"node-{node_id}")).to_have_attribute("data-status", "succeeded")
        expect(page.get_by_test_id(f"node-{node_id}")).to_have_class(re.compile(r"\bstatus-succeeded\b"))
        expect(page.get_by_test_id(f"run-step-{node_id}")).to_have_attribute("data-status", "succeeded")
    final_state = json.loads(page.get_by_test_id("run-final-state").inner_text())
    assert final_state["intent"] == "both"
    assert set(final_state["final_output"]) >= {"intent", "text_result", "image_result", "db_result"}
    assert int(page.get_by_test_id("run-tokens").inner_text()) > 0
    page.wait_for_timeout(300)
    page.screenshot(path=str(artifacts / "run-finished.png"))

    # -- the run is listed and reopens
    history = page.get_by_test_id("run-history-item")
    expect(history).to_have_count(1)
    run_id = page.get_by_test_id("run-id").inner_text()
    page.reload()
    page.get_by_test_id("tab-run").click()
    page.get_by_test_id("run-history-item").first.click()
    expect(page.get_by_test_id("run-id")).to_have_text(run_id)
    expect(page.get_by_test_id("node-final")).to_have_attribute("data-status", "succeeded")


def test_import_round_trips_triage_unchanged(page: Page, triage_path: Path):
    original = json.loads(triage_path.read_text())
    open_studio(page)
    page.get_by_test_id("import-file").set_input_files(str(triage_path))
    expect(page.locator(".react-flow__node")).to_have_count(len(original["nodes"]))
    page.get_by_test_id("node-router").click()  # selecting (not moving) a node changes nothing
    page.get_by_test_id("tab-properties").click()
    expect(page.get_by_test_id("node-properties")).to_have_attribute("data-node", "router")
    assert preview(page) == original

    # Export gives the same document back.
    with page.expect_download() as download:
        page.get_by_test_id("btn-export").click()
    assert json.loads(Path(download.value.path()).read_text()) == original

    # Invalid JSON is shown and not applied; valid JSON is applied to the canvas.
    box = page.get_by_test_id("json-preview")
    box.fill('{"id": "support-triage", "nodes": [')
    expect(page.get_by_test_id("json-error")).to_contain_text("Invalid JSON")
    expect(page.locator(".react-flow__node")).to_have_count(len(original["nodes"]))
    smaller = json.loads(json.dumps(original))
    smaller["nodes"] = [n for n in smaller["nodes"] if n["id"] != "painter"]
    box.fill(json.dumps(smaller, indent=2))
    expect(page.get_by_test_id("json-error")).to_have_count(0)
    expect(page.locator(".react-flow__node")).to_have_count(len(original["nodes"]) - 1)
    expect(page.get_by_test_id("node-painter")).to_have_count(0)


def test_canvas_undo_redo_delete_and_multiselect(page: Page):
    open_studio(page)
    page.get_by_test_id("palette-input").click()
    page.get_by_test_id("palette-llm").click()
    page.get_by_test_id("palette-db").click()
    expect(page.locator(".react-flow__node")).to_have_count(3)
    page.get_by_test_id("btn-layout").click()
    page.get_by_test_id("canvas").click(position={"x": 20, "y": 20})
    page.keyboard.press("Control+z")  # undo the layout
    page.keyboard.press("Control+z")  # undo adding db
    expect(page.get_by_test_id("node-db")).to_have_count(0)
    page.keyboard.press("Control+Shift+z")
    expect(page.get_by_test_id("node-db")).to_be_visible()
    page.keyboard.press("Control+Shift+z")  # the layout again: nodes side by side
    expect(page.get_by_test_id("btn-redo")).to_be_disabled()

    page.get_by_test_id("node-llm").click()
    page.get_by_test_id("node-db").click(modifiers=["Shift"])
    page.get_by_test_id("tab-properties").click()
    expect(page.get_by_test_id("panel-properties")).to_contain_text("2 nodes")
    page.keyboard.press("Delete")
    expect(page.locator(".react-flow__node")).to_have_count(1)
    page.get_by_test_id("btn-undo").click()
    expect(page.locator(".react-flow__node")).to_have_count(3)


def test_source_library_crud(page: Page):
    open_studio(page)
    page.once("dialog", lambda d: d.accept())
    page.get_by_test_id("tab-sources").click()
    page.get_by_test_id("source-add-kind").select_option("db")
    page.get_by_test_id("source-add").click()
    set_id(page, "source-db-id", "warehouse")
    page.get_by_test_id("source-warehouse-dsn_env").fill("WAREHOUSE_DSN")
    page.get_by_test_id("source-warehouse-publish").click()
    entry = page.get_by_test_id("library-warehouse")
    expect(entry).to_contain_text("db")
    # Edit in the library (PUT), then delete it (DELETE).
    page.get_by_test_id("library-warehouse-edit").click()
    page.get_by_test_id("library-warehouse-form-dsn_env").fill("OTHER_DSN")
    page.get_by_test_id("library-warehouse-save").click()
    expect(page.get_by_test_id("notice")).to_contain_text("saved to the library")
    page.get_by_test_id("library-warehouse-delete").click()
    expect(entry).to_have_count(0)


def _big_spec(n: int) -> dict:
    nodes = [{"id": "n0", "type": "input"}]
    edges = []
    for i in range(1, n):
        nodes.append({"id": f"n{i}", "type": "llm", "config": {"prompt": f"step {i}: {{user_input}}"}})
        edges.append({"from": f"n{(i - 1) // 3}", "to": f"n{i}"})
    return {"id": "big", "name": f"{n} nodes", "start_node": "n0", "nodes": nodes, "edges": edges}


def test_designer_stays_responsive_with_200_nodes(page: Page, tmp_path: Path, artifacts: Path):
    n = 200
    spec_file = tmp_path / "big.json"
    spec_file.write_text(json.dumps(_big_spec(n)))
    open_studio(page)

    started = time.perf_counter()
    page.get_by_test_id("import-file").set_input_files(str(spec_file))
    page.wait_for_function(
        """n => {
            const els = document.querySelectorAll('.react-flow__node');
            return els.length === n && [...els].every(e => getComputedStyle(e).visibility !== 'hidden');
        }""", arg=n, polling="raf", timeout=30_000)
    render_s = time.perf_counter() - started

    node = page.locator('.react-flow__node[data-id="n100"]')
    before = node.get_attribute("style")
    box = node.bounding_box()
    assert box is not None
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    steps = 30

    # Baseline: the same pointer moves without a drag (the cost of driving the browser).
    started = time.perf_counter()
    for i in range(1, steps + 1):
        page.mouse.move(x + 4 * i, y + 2 * i + 300)
    hover_s = time.perf_counter() - started

    # The drag, with every animation frame's time recorded in the page.
    page.evaluate("""() => { window.__frames = []; const tick = t => { window.__frames.push(t);
        if (window.__frames.length < 100000 && !window.__stop) requestAnimationFrame(tick); };
        window.__stop = false; requestAnimationFrame(tick); }""")
    started = time.perf_counter()
    page.mouse.move(x, y)
    page.mouse.down()
    for i in range(1, steps + 1):
        page.mouse.move(x + 4 * i, y + 2 * i)
    page.mouse.up()
    page.wait_for_function("([sel, before]) => document.querySelector(sel).getAttribute('style') !== before",
                           arg=['.react-flow__node[data-id="n100"]', before], polling="raf")
    drag_s = time.perf_counter() - started
    frames = page.evaluate("""() => { window.__stop = true; const f = window.__frames;
        const gaps = f.slice(1).map((t, i) => t - f[i]); return {count: f.length,
        max_gap: Math.max(0, ...gaps), mean_gap: gaps.reduce((a, b) => a + b, 0) / Math.max(1, gaps.length)}; }""")

    moved = [x for x in preview(page)["nodes"] if "position" in x]
    assert [x["id"] for x in moved] == ["n100"]  # only the dragged node gets a position

    result = {"nodes": n, "render_seconds": round(render_s, 3), "drag_seconds": round(drag_s, 3),
              "drag_steps": steps, "ms_per_drag_step": round(1000 * drag_s / steps, 1),
              "ms_per_pointer_move_without_drag": round(1000 * hover_s / steps, 1),
              "longest_frame_ms_during_drag": round(frames["max_gap"], 1),
              "mean_frame_ms_during_drag": round(frames["mean_gap"], 1)}
    (artifacts / "perf-200-nodes.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n200-node designer: {result}")
    assert render_s < 5, result
    assert drag_s < 5, result


def test_workflow_versions(page: Page, triage_path: Path):
    open_studio(page)
    page.get_by_test_id("import-file").set_input_files(str(triage_path))
    page.get_by_test_id("tab-properties").click()
    set_id(page, "wf-id", "triage-versions")
    page.get_by_test_id("btn-save").click()
    expect(page.get_by_test_id("workflow-version")).to_have_text("v1")
    page.get_by_test_id("workflow-name").fill("Support triage, renamed")
    page.keyboard.press("Control+s")
    expect(page.get_by_test_id("workflow-version")).to_have_text("v2")
    expect(page.get_by_test_id("workflow-item-triage-versions")).to_contain_text("Support triage, renamed")
    versions = page.get_by_test_id("version-list")
    expect(versions.locator("button")).to_have_count(2)
    page.get_by_test_id("version-item-1").click()
    expect(page.get_by_test_id("workflow-name")).to_have_value("Support triage")
    expect(page.get_by_test_id("workflow-version")).to_have_text("v1")
    page.get_by_test_id("btn-save").click()  # restoring an old version saves it as the newest
    expect(page.get_by_test_id("workflow-version")).to_have_text("v3")
    expect(versions.locator("button")).to_have_count(3)
