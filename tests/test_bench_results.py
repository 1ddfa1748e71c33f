"""bench/RESULTS.md is what the README quotes: every figure in the README's performance table
is in RESULTS.md, and bench/results.json (the last outcome of every bench) renders into every
section without falling back to raw output."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIGURE = re.compile(r"\d+(?:,\d{3})*(?:\.\d+)?(?: ?(?:x|ms|s|KB|MB|B|/s|%))?")


def performance_rows() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Performance", 1)[1].split("\n## ", 1)[0]
    return [ln for ln in section.splitlines() if ln.startswith("| ") and not ln.startswith("| what")
            and not ln.startswith("| ---")]


def test_the_readme_quotes_only_figures_that_results_holds():
    results = (ROOT / "bench" / "RESULTS.md").read_text()
    rows = performance_rows()
    assert len(rows) >= 8, "the README's performance table is missing"
    for row in rows:
        ours = row.split("|")[2]  # | what | ours vs anchor | target | met |
        for figure in FIGURE.findall(ours):
            assert figure in results, f"README quotes {figure!r} ({row.strip()}) but bench/RESULTS.md does not hold it"


def test_every_stored_outcome_renders_into_its_section(tmp_path):
    import sys

    sys.path.insert(0, str(ROOT))
    from bench import run_all

    outcomes = json.loads((ROOT / "bench" / "results.json").read_text())
    assert set(outcomes) == set(run_all.BENCHES), "RESULTS.md must cover every bench"
    out = tmp_path / "RESULTS.md"
    info = {k: "?" for k in ("cpus", "cpu", "memory", "arch", "os", "python", "postgres", "redis", "commit")}
    run_all.write_results(outcomes, info, False, 0.0, path=out)
    text = out.read_text()
    assert "could not be tabulated" not in text and "Did not complete" not in text
    for title, *_ in run_all.BENCHES.values():
        assert f"## {title}" in text
