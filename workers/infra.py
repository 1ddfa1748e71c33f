"""Which errors mean "infrastructure blinked" rather than "this run or step failed"."""

from __future__ import annotations


def transient(exc: BaseException) -> bool:
    """A dropped database connection, Redis restarting, the broker unreachable: the work did
    nothing wrong and is retried (a run from its checkpoint, a step by its key) instead of
    being failed. Looks through the exception's causes."""
    import kombu.exceptions
    import psycopg
    import redis.exceptions
    from sqlalchemy.exc import DBAPIError

    from ..graph.step import StepFailed

    kinds = (psycopg.OperationalError, redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
             kombu.exceptions.OperationalError)
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, StepFailed):
            return False  # a node's own failure is the outcome, not a blip
        if isinstance(current, kinds):
            return True
        if isinstance(current, DBAPIError) and (current.connection_invalidated
                                                or isinstance(current.orig, psycopg.OperationalError)):
            return True
        current = current.__cause__ or current.__context__
    return False
