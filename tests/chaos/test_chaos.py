"""Issue 9: faults injected while a steady load of runs flows; the books must balance.

`make test` runs the short form (a few faults of each kind, about two minutes);
`make test-chaos` sets AF_CHAOS_LONG=1 for the long form (10 minutes, several hundred runs,
AF_CHAOS_SECONDS to change), whose table is also written to bench/chaos-long.txt
(AF_CHAOS_REPORT to change). See tests/chaos/harness.py for the faults and the definitions.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from tests.chaos.harness import Chaos, Plan

LONG = os.environ.get("AF_CHAOS_LONG", "") not in ("", "0")
SECONDS = float(os.environ.get("AF_CHAOS_SECONDS", "600"))

pytestmark = [pytest.mark.chaos, pytest.mark.distributed,
              pytest.mark.timeout(int(SECONDS + 900) if LONG else 280)]


@pytest.mark.parametrize("layout", ["default", "tuned"])
def test_every_accepted_run_ends_and_no_step_is_paid_twice(chaos_db, capsys, layout):
    """`default`: `agentflow worker` with no arguments, three times, no beat; `tuned`: make up's."""
    plan = Plan.long(SECONDS) if LONG else Plan.short()
    logdir = Path(tempfile.mkdtemp(prefix="af-chaos-"))  # kept for post-mortems (pytest rotates tmp_path)
    with Chaos(dict(os.environ), chaos_db, logdir, layout=layout) as chaos:
        chaos.run(plan)
        table = chaos.report()
    with capsys.disabled():
        print("\n" + table + f"\n(logs in {logdir})\n")
    out = os.environ.get("AF_CHAOS_REPORT") or (str(Path(__file__).resolve().parents[2] / "bench" / "chaos-long.txt")
                                                if LONG else None)
    if out:
        Path(out).write_text(table + "\n")
    books = chaos.books()
    rows = books["rows"]
    assert sum(r["accepted"] for r in rows.values()) > 0, "the load was accepted at least sometimes"
    for kind, _ in plan.phases:
        assert chaos.counts[kind] > 0, f"no {kind} fault was injected"
    assert not books["problems"], "\n".join(books["problems"][:30])
