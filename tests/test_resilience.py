"""resilience.call: retries, backoff, Retry-After, the per-source circuit breaker."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from agentflow.graph import resilience
from agentflow.graph.errors import CircuitOpenError, ProviderError, StepError

pytestmark = pytest.mark.usefixtures("reset_resilience")


class Flaky:
    """fn for resilience.call: raises the given errors in turn, then returns 'ok'."""

    def __init__(self, *errors: BaseException):
        self.errors = list(errors)
        self.calls = 0

    def __call__(self):
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def err(status: int, retry_after: float | None = None) -> ProviderError:
    return ProviderError(f"src answered {status}", status=status, retry_after=retry_after)


def test_retries_until_success_with_growing_backoff():
    delays: list[float] = []
    fn = Flaky(err(503), err(502), err(500))
    assert resilience.call("s", fn, retries=3, base_delay=0.5, sleep=delays.append) == "ok"
    assert fn.calls == 4
    # equal jitter: attempt n waits within [d/2, d] for d = 0.5 * 2**(n-1)
    for n, delay in enumerate(delays, start=1):
        ceiling = 0.5 * 2 ** (n - 1)
        assert ceiling / 2 <= delay <= ceiling


def test_a_before_retry_check_runs_before_each_retry_only_and_can_stop_them():
    """The node task's fence (workers/node_task.py): a worker whose step was taken over
    pays for no retry."""
    checks: list[int] = []
    fn = Flaky(err(503), err(503), err(503))
    token = resilience.before_retry.set(lambda: checks.append(fn.calls))
    try:
        assert resilience.call("s", fn, retries=3, sleep=lambda s: None) == "ok"
    finally:
        resilience.before_retry.reset(token)
    assert checks == [1, 2, 3]  # before the 2nd, 3rd and 4th calls, never before the first

    def taken_over() -> None:
        raise StepError("step k was taken over by another worker; not retried here")

    fn = Flaky(err(503), err(503))
    token = resilience.before_retry.set(taken_over)
    try:
        with pytest.raises(StepError, match="taken over"):
            resilience.call("s", fn, retries=3, sleep=lambda s: None)
    finally:
        resilience.before_retry.reset(token)
    assert fn.calls == 1
    assert resilience.before_retry.get() is None


def test_retry_after_is_a_floor_capped_at_max_delay():
    delays: list[float] = []
    fn = Flaky(err(429, retry_after=2.0), err(429, retry_after=99))
    resilience.call("s", fn, retries=3, base_delay=0.01, max_delay=5, sleep=delays.append)
    assert delays[0] == pytest.approx(2.0)
    assert delays[1] == 5


def test_exhaustion_raises_last_error_with_attempt_count():
    fn = Flaky(*[err(503)] * 10)
    with pytest.raises(ProviderError) as info:
        resilience.call("s", fn, retries=2, sleep=lambda s: None)
    assert fn.calls == 3
    assert info.value.status == 503
    assert "src answered 503 (after 3 attempts)" == str(info.value)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_client_errors_are_not_retried(status):
    fn = Flaky(err(status))
    with pytest.raises(ProviderError) as info:
        resilience.call("s", fn, retries=5, sleep=lambda s: pytest.fail("must not wait"))
    assert fn.calls == 1
    assert "attempts" not in str(info.value)


def test_plain_step_errors_are_not_retried_and_bugs_pass_through():
    fn = Flaky(StepError("bad query"))
    with pytest.raises(StepError):
        resilience.call("s", fn, retries=5, sleep=lambda s: None)
    assert fn.calls == 1
    with pytest.raises(ZeroDivisionError):
        resilience.call("s", lambda: 1 / 0, retries=5, sleep=lambda s: None)


def test_transport_timeouts_become_retryable_provider_errors():
    fn = Flaky(httpx.ReadTimeout("slow"), httpx.ConnectError("refused"))
    assert resilience.call("s", fn, retries=2, sleep=lambda s: None) == "ok"
    with pytest.raises(ProviderError, match="did not answer in time"):
        resilience.call("s", Flaky(*[httpx.ReadTimeout("slow")] * 3), retries=0)


def test_module_level_sleep_can_be_patched(monkeypatch):
    waited: list[float] = []
    monkeypatch.setattr(resilience, "sleep", waited.append)
    resilience.call("s", Flaky(err(429, retry_after=3)), retries=1)
    assert waited == [pytest.approx(3)]


def test_overall_timeout_budget_stops_retrying():
    started = time.monotonic()
    fn = Flaky(*[err(503, retry_after=0.2)] * 50)
    with pytest.raises(ProviderError, match="attempts"):
        resilience.call("s", fn, retries=50, timeout=0.5)
    # without the budget, 50 retries after 0.2 s each would take 10 s; the bound leaves
    # room for a loaded CI machine (1.16 s was seen), the call count is the exact check
    assert time.monotonic() - started < 2.0
    assert 2 <= fn.calls <= 4


def test_backoff_bounds():
    assert 0.25 <= resilience.backoff(1, 0.5, 30) <= 0.5
    assert 4 <= resilience.backoff(5, 0.5, 30) <= 8
    assert resilience.backoff(40, 0.5, 30) <= 30
    assert resilience.backoff(1, 0.5, 30, retry_after=7) == 7


# ---------------------------------------------------------------- circuit breaker


def test_breaker_opens_after_fail_max_and_closes_after_reset_timeout():
    resilience.configure_breaker("b", fail_max=3, reset_timeout=0.4)
    fn = Flaky(*[err(500)] * 3)
    for _ in range(3):
        with pytest.raises(ProviderError):
            resilience.call("b", fn, retries=0)
    assert fn.calls == 3
    with pytest.raises(CircuitOpenError) as info:
        resilience.call("b", fn, retries=0)
    assert fn.calls == 3  # not called while open
    assert "source 'b' is failing; calls suspended for" in str(info.value)
    assert "last error: src answered 500" in str(info.value)
    time.sleep(0.45)
    assert resilience.call("b", fn, retries=0) == "ok"  # half-open trial succeeds -> closed
    assert resilience.breaker("b").current_state == "closed"


def test_failed_trial_reopens_the_breaker():
    resilience.configure_breaker("b", fail_max=1, reset_timeout=0.2)
    fn = Flaky(err(503), err(503))
    with pytest.raises(ProviderError):
        resilience.call("b", fn, retries=0)
    time.sleep(0.25)
    with pytest.raises(ProviderError):
        resilience.call("b", fn, retries=0)  # the trial call fails
    with pytest.raises(CircuitOpenError):
        resilience.call("b", fn, retries=0)
    assert fn.calls == 2


def test_open_breaker_stops_retries_midway():
    resilience.configure_breaker("b", fail_max=2, reset_timeout=30)
    fn = Flaky(*[err(503)] * 10)
    with pytest.raises(CircuitOpenError):
        resilience.call("b", fn, retries=5, sleep=lambda s: None)
    assert fn.calls == 2


def test_client_errors_do_not_open_the_breaker():
    resilience.configure_breaker("b", fail_max=2, reset_timeout=30)
    for _ in range(5):
        with pytest.raises(ProviderError):
            resilience.call("b", Flaky(err(400)), retries=0)
    assert resilience.breaker("b").current_state == "closed"
    assert resilience.call("b", Flaky(), retries=0) == "ok"


def test_breakers_are_per_source():
    resilience.configure_breaker("a", fail_max=1, reset_timeout=30)
    with pytest.raises(ProviderError):
        resilience.call("a", Flaky(err(500)), retries=0)
    with pytest.raises(CircuitOpenError):
        resilience.call("a", Flaky(), retries=0)
    assert resilience.call("other", Flaky(), retries=0) == "ok"


def test_breaker_does_not_serialise_parallel_calls():
    def slow():
        time.sleep(0.3)
        return "ok"

    started = time.monotonic()
    threads = [threading.Thread(target=resilience.call, args=("p", slow)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert time.monotonic() - started < 0.9
