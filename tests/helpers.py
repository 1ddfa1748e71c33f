"""Shared test helpers: the reference spec and small spec builders."""

from __future__ import annotations

import asyncio
import copy
import json
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
TRIAGE_PATH = SHARED / "examples" / "triage.json"
if not TRIAGE_PATH.exists():  # a clone without ../shared still has the packaged copy
    TRIAGE_PATH = ROOT / "examples" / "triage.json"


def triage() -> dict:
    return copy.deepcopy(json.loads(TRIAGE_PATH.read_text()))


def rules_spec(**over) -> dict:
    """A workflow that needs no API key: input -> rules router -> aggregator."""
    spec = {
        "id": "rules-demo", "name": "Rules demo", "start_node": "input",
        "nodes": [
            {"id": "input", "type": "input"},
            {"id": "route", "type": "router", "config": {"mode": "rules", "rules": [
                {"condition": "metadata.tier == 'paid'", "value": "priority"}], "default": "normal"}},
            {"id": "final", "type": "aggregator", "config": {"fields": ["intent", "user_input"]}},
        ],
        "edges": [{"from": "input", "to": "route"}, {"from": "route", "to": "final"}],
    }
    spec.update(over)
    return spec


def run_coroutine(main, timeout: float = 120):
    """`asyncio.run(main())` on a fresh thread, and its result or exception here: a fresh
    thread has no event loop, whatever an earlier test (e.g. Playwright's sync API) left
    running on this one."""
    out: dict = {}

    def runner():
        try:
            out["value"] = asyncio.run(main())
        except BaseException as exc:  # re-raised below, in the test's own thread
            out["error"] = exc

    thread = threading.Thread(target=runner, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"the coroutine did not finish in {timeout:g} s"
    if "error" in out:
        raise out["error"]
    return out.get("value")
