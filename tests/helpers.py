"""Shared test helpers: the reference spec and small spec builders."""

from __future__ import annotations

import copy
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
TRIAGE_PATH = SHARED / "examples" / "triage.json"
if not TRIAGE_PATH.exists():  # a clone without ../shared still has the packaged copy
    TRIAGE_PATH = ROOT / "agentflow" / "examples" / "triage.json"


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
