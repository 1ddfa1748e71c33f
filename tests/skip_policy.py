"""Pytest plugin: a run that skipped any test fails, unless AGENTFLOW_TEST_ALLOW_SKIP=1.

A skipped test proved nothing; CI must not go green on one. The skip count is printed
after pytest's summary, and the exit status becomes 1 when it is not zero (pytest's own
closing line is printed as usual). `make test-fast` sets the variable; nothing else does.
Loaded by tests/conftest.py (`pytest_plugins`), or with `-p tests.skip_policy`.
"""

from __future__ import annotations

import pytest

from tests.needs import ALLOW_SKIP_ENV, skips_allowed

_skipped: list[str] = []


def _count(report) -> None:
    # an xfail is reported as "skipped" with `wasxfail`: expected, not a skip
    if report.skipped and not hasattr(report, "wasxfail"):
        _skipped.append(report.nodeid)


def pytest_runtest_logreport(report) -> None:
    _count(report)


def pytest_collectreport(report) -> None:
    _count(report)  # a module-level skip


def pytest_sessionstart(session) -> None:
    _skipped.clear()


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session, exitstatus) -> None:
    if _skipped and not skips_allowed() and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    n = len(_skipped)
    if n and not skips_allowed():
        terminalreporter.write_line(
            f"skipped: {n} - FAILED: a skipped test proved nothing; install or start what the "
            f"skip reasons above name (`{ALLOW_SKIP_ENV}=1`, i.e. `make test-fast`, allows skips)",
            red=True, bold=True)
    else:
        terminalreporter.write_line(f"skipped: {n}" + (f" (allowed by {ALLOW_SKIP_ENV})" if n else ""))
