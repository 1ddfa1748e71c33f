"""Issue 9: faults injected while a steady load of runs flows; the books must balance.

`make test` runs the short form (a few faults of each kind, about a minute and a half), both
worker layouts at the same time: each has its own private Redis, Postgres database, fake
provider and API, and the load is light (a run every 1.6 s), so the two share nothing but
the cores. `make test-chaos` sets AF_CHAOS_LONG=1 for the long form (10 minutes, several
hundred runs, AF_CHAOS_SECONDS to change), one layout after the other, whose table is also
written to bench/chaos-long.txt (AF_CHAOS_REPORT to change). See tests/chaos/harness.py for
the faults and the definitions.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.chaos.harness import Chaos, Plan
from tests.databases import fresh_database
from tests.needs import need_redis_server

LONG = os.environ.get("AF_CHAOS_LONG", "") not in ("", "0")
SECONDS = float(os.environ.get("AF_CHAOS_SECONDS", "600"))
# `default`: `agentflow worker` with no arguments, three times, no beat; `tuned`: make up's
LAYOUTS = ["default", "tuned"]

pytestmark = [pytest.mark.chaos, pytest.mark.distributed,
              pytest.mark.timeout(int(2 * SECONDS + 1800) if LONG else 300)]


@dataclass
class Session:
    plan: Plan
    table: str
    books: dict[str, Any]
    counts: dict[str, int]
    logdir: Path


def one_session(layout: str, db: str) -> Session:
    plan = Plan.long(SECONDS) if LONG else Plan.short()
    logdir = Path(tempfile.mkdtemp(prefix=f"af-chaos-{layout}-"))  # kept for post-mortems
    with Chaos(dict(os.environ), db, logdir, layout=layout) as chaos:
        chaos.run(plan)
        table = chaos.report()
    return Session(plan, table, chaos.books(), dict(chaos.counts), logdir)


@pytest.fixture(scope="module")
def sessions() -> Iterator[dict[str, Session | BaseException]]:
    """Every layout's session: at the same time in the short form, one after the other in
    the long one (each is a full load for 10 minutes)."""
    need_redis_server()
    out: dict[str, Session | BaseException] = {}
    with contextlib.ExitStack() as stack:
        # made here, one after the other: alembic's migration context is one per process
        dbs = {layout: stack.enter_context(fresh_database("af_chaos_")) for layout in LAYOUTS}

        def run(layout: str) -> None:
            try:
                out[layout] = one_session(layout, dbs[layout])
            except BaseException as exc:  # raised by that layout's test
                out[layout] = exc

        if LONG:
            for layout in LAYOUTS:
                run(layout)
        else:
            threads = [threading.Thread(target=run, args=(layout,), name=f"chaos-{layout}") for layout in LAYOUTS]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        yield out


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_accepted_run_ends_and_no_step_is_paid_twice(sessions, capsys, layout):
    got = sessions[layout]
    if isinstance(got, BaseException):
        raise got
    with capsys.disabled():
        print(f"\n[{layout} layout]\n" + got.table + f"\n(logs in {got.logdir})\n")
    out = os.environ.get("AF_CHAOS_REPORT") or (str(Path(__file__).resolve().parents[2] / "bench" / "chaos-long.txt")
                                                if LONG else None)
    if out:
        Path(out).write_text(got.table + "\n")
    rows = got.books["rows"]
    assert sum(r["accepted"] for r in rows.values()) > 0, "the load was accepted at least sometimes"
    for kind, _ in got.plan.phases:
        assert got.counts.get(kind, 0) > 0, f"no {kind} fault was injected"
    assert not got.books["problems"], "\n".join(got.books["problems"][:30])
