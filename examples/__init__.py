"""Example workflows shipped with AgentFlow, and the sample SQLite shop they query."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

HERE = Path(__file__).parent
SAMPLE_DSN_ENV = "AGENTFLOW_SAMPLE_DSN"


def example_specs() -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(HERE.glob("*.json"))]


def ensure_sample_db(home: Path) -> str:
    """Create (or refresh) the sample shop under `home`; set AGENTFLOW_SAMPLE_DSN if unset."""
    home.mkdir(parents=True, exist_ok=True)
    path = home / "sample_shop.db"
    with sqlite3.connect(path) as conn:
        conn.executescript((HERE / "shop.sql").read_text())
    dsn = f"sqlite:///{path}"
    os.environ.setdefault(SAMPLE_DSN_ENV, dsn)
    return dsn
