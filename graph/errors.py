"""Errors a step can fail with. Messages are written for the person reading the run."""

from __future__ import annotations


class StepError(RuntimeError):
    """A node failed; `retryable` says whether trying again could help."""

    retryable = False

    def __init__(self, message: str, *, node_id: str | None = None, retryable: bool | None = None):
        super().__init__(message)
        self.node_id = node_id
        if retryable is not None:
            self.retryable = retryable


class ProviderError(StepError):
    """The outside service answered with an error (HTTP status kept in `status`)."""

    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None,
                 retryable: bool | None = None, node_id: str | None = None):
        super().__init__(message, node_id=node_id,
                         retryable=retryable if retryable is not None else status in (408, 409, 429, 500, 502, 503, 504))
        self.status = status
        self.retry_after = retry_after


class CircuitOpenError(StepError):
    """Calls to a source are suspended after repeated failures."""


class BlockedAddressError(StepError):
    """An api node tried to reach a private, loopback or link-local address."""


class RateLimitExceeded(StepError):
    """A node's queue gave no slot within the run's limit wait. (A call that can never fit
    the budget, e.g. bigger than tokens/minute, is the limiter's own RateLimitExceeded.)"""


class InvalidOutput(StepError):
    """The provider answered, but not with something the node accepts."""
