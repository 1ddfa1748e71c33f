"""Retries and circuit breakers around calls to the outside world.

`call(source_id, fn)` runs `fn` with tenacity retries (exponential backoff with jitter,
Retry-After honoured) behind one pybreaker circuit breaker per source id. Only failures
that are the provider's fault (5xx, timeouts, connection errors) count toward opening a
breaker; a 4xx is the caller's mistake and is raised at once, and a 429 is retried after
its Retry-After without counting (the provider is up, just pacing us).
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from contextvars import ContextVar
from typing import Callable, TypeVar

import httpx
import openai
import pybreaker
import tenacity

from .errors import CircuitOpenError, ProviderError, StepError
from .secrets import redact

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_RETRIES = 3

# Run before each retry (never before the first attempt); raising stops the retries. The
# distributed node task sets one that raises when another worker has taken its step over:
# a worker cut off from the fleet must not pay for retries whose result would be discarded.
before_retry: ContextVar[Callable[[], None] | None] = ContextVar("agentflow_before_retry", default=None)
DEFAULT_FAIL_MAX = 5
DEFAULT_RESET_TIMEOUT = 30.0

# Tests monkeypatch this (or pass `sleep=`) to make backoff instant.
sleep: Callable[[float], None] = time.sleep


# ---------------------------------------------------------------- errors


def as_step_error(exc: BaseException, source_id: str) -> BaseException:
    """Map transport exceptions that escaped an adapter to a ProviderError."""
    if isinstance(exc, StepError):
        return exc
    if isinstance(exc, (httpx.TimeoutException, openai.APITimeoutError, TimeoutError)):
        return ProviderError(f"source '{source_id}' did not answer in time", retryable=True)
    if isinstance(exc, (httpx.TransportError, openai.APIConnectionError, ConnectionError)):
        return ProviderError(f"could not reach source '{source_id}': {redact(str(exc)) or type(exc).__name__}",
                             retryable=True)
    return exc


def is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, StepError) and bool(exc.retryable) and not isinstance(exc, CircuitOpenError)


def counts_as_failure(exc: BaseException) -> bool:
    """Does this error say the provider is unhealthy (vs. our request being wrong)?"""
    if isinstance(exc, CircuitOpenError):
        return False
    if isinstance(exc, ProviderError) and exc.status == 429:
        # A healthy provider pacing us: Retry-After and the rate limits handle it. Counted,
        # it opened the breaker under steady 429s and failed every run of the worker for
        # reset_timeout seconds (found by tests/chaos: 429 on every third call).
        return False
    if is_retryable(exc):
        return True
    if isinstance(exc, ProviderError):
        # status None = no answer at all (timeout, dropped connection); 5xx = their fault.
        return exc.status is None or exc.status >= 500
    return False


# ---------------------------------------------------------------- breakers


class _OpenedAt(pybreaker.CircuitBreakerListener):
    """Remembers when a breaker opened and the last failure, for a readable message."""

    def __init__(self) -> None:
        self.opened_at = 0.0
        self.last_error = ""

    def failure(self, cb, exc) -> None:
        text = redact(str(exc))
        self.last_error = text if len(text) <= 200 else text[:200] + "..."

    def state_change(self, cb, old_state, new_state) -> None:
        if new_state is not None and new_state.name == pybreaker.STATE_OPEN:
            self.opened_at = time.monotonic()


_breakers: dict[str, tuple[pybreaker.CircuitBreaker, _OpenedAt]] = {}
_settings: dict[str, tuple[int, float]] = {}
_registry_lock = threading.Lock()


def configure_breaker(source_id: str, fail_max: int = DEFAULT_FAIL_MAX,
                      reset_timeout: float = DEFAULT_RESET_TIMEOUT) -> None:
    """Set a source's breaker thresholds (replaces its current breaker and state)."""
    with _registry_lock:
        _settings[source_id] = (fail_max, reset_timeout)
        _breakers.pop(source_id, None)


def reset_breakers() -> None:
    """Forget every breaker and setting (tests)."""
    with _registry_lock:
        _breakers.clear()
        _settings.clear()


def breaker(source_id: str) -> pybreaker.CircuitBreaker:
    return _breaker(source_id)[0]


def _breaker(source_id: str) -> tuple[pybreaker.CircuitBreaker, _OpenedAt]:
    with _registry_lock:
        entry = _breakers.get(source_id)
        if entry is None:
            fail_max, reset_timeout = _settings.get(source_id, (DEFAULT_FAIL_MAX, DEFAULT_RESET_TIMEOUT))
            listener = _OpenedAt()
            cb = pybreaker.CircuitBreaker(fail_max=fail_max, reset_timeout=reset_timeout, name=source_id,
                                          listeners=[listener], throw_new_error_on_trip=False)
            entry = _breakers[source_id] = (cb, listener)
        return entry


def _raise(exc: BaseException):
    raise exc


def _through_breaker(source_id: str, fn: Callable[[], T]) -> T:
    """Run fn guarded by the source's breaker.

    pybreaker's `call` holds the breaker's lock for the whole call, which would
    serialise every parallel call to a source. So we only ask it for admission and
    then replay the outcome through it (a cheap call under the lock), letting
    pybreaker keep the counting and the state machine.
    """
    cb, opened = _breaker(source_id)
    if cb.current_state == pybreaker.STATE_OPEN:
        remaining = cb.reset_timeout - (time.monotonic() - opened.opened_at)
        if remaining > 0:
            last = f" (last error: {opened.last_error})" if opened.last_error else ""
            raise CircuitOpenError(
                f"source '{source_id}' is failing; calls suspended for {_secs(remaining)} s{last}")
    try:
        result = fn()
    except BaseException as exc:  # noqa: BLE001 - re-raised below
        err = as_step_error(exc, source_id)
        if counts_as_failure(err):
            try:
                cb.call(_raise, err)
            except BaseException:  # noqa: BLE001 - the breaker re-raises err (or says it is open)
                pass
        if err is exc:
            raise
        raise err from exc
    try:
        cb.call(lambda: None)
    except pybreaker.CircuitBreakerError:
        pass  # opened by a parallel failure meanwhile; our answer is still good
    return result


def _secs(value: float) -> str:
    return f"{math.ceil(value * 10) / 10:g}"


# ---------------------------------------------------------------- retries


def backoff(attempt: int, base_delay: float, max_delay: float, retry_after: float | None = None,
            jitter: bool = True) -> float:
    """Seconds to wait before attempt `attempt + 1`: exponential with "equal jitter" (or
    exactly base_delay * 2^(attempt-1) without); a server's Retry-After is a floor (capped
    at max_delay)."""
    ceiling = min(max_delay, base_delay * (2 ** max(0, attempt - 1)))
    delay = ceiling / 2 + random.uniform(0, ceiling / 2) if jitter else ceiling
    if retry_after is not None and retry_after > 0:
        delay = max(delay, retry_after)
    return min(delay, max_delay)


def call(source_id: str, fn: Callable[[], T], *, retries: int = DEFAULT_RETRIES,
         timeout: float | None = None, base_delay: float = 0.5, max_delay: float = 30.0,
         sleep: Callable[[float], None] | None = None, jitter: bool = True) -> T:
    """Call `fn()` with up to `retries` retries behind the source's circuit breaker.

    `timeout` is an overall budget in seconds: no retry starts whose wait would end
    after it (each attempt's own timeout belongs to the adapter `fn` uses).
    Raises the last StepError, its message saying how many attempts were made.
    """
    started = time.monotonic()
    do_sleep = sleep or (lambda s: globals()["sleep"](s))  # late lookup: monkeypatchable

    def wait(state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        delay = backoff(state.attempt_number, base_delay, max_delay, getattr(exc, "retry_after", None), jitter)
        log.warning("source '%s': attempt %d failed (%s); retrying in %.2f s",
                    source_id, state.attempt_number, redact(str(exc)), delay)
        return delay

    def stop(state: tenacity.RetryCallState) -> bool:
        if state.attempt_number > retries:
            return True
        if timeout is not None:
            exc = state.outcome.exception() if state.outcome else None
            floor = getattr(exc, "retry_after", None) or 0
            return time.monotonic() - started + min(floor, max_delay) >= timeout
        return False

    retrying = tenacity.Retrying(stop=stop, wait=wait, sleep=do_sleep, reraise=True,
                                 retry=tenacity.retry_if_exception(is_retryable))
    attempts = 0

    def attempt() -> T:
        nonlocal attempts
        if attempts:
            check = before_retry.get()
            if check is not None:
                check()
        attempts += 1
        return _through_breaker(source_id, fn)

    try:
        return retrying(attempt)
    except StepError as exc:
        if attempts > 1 and is_retryable(exc):
            exc.args = (f"{exc.args[0] if exc.args else exc} (after {attempts} attempts)", *exc.args[1:])
        raise
