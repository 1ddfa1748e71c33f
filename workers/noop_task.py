"""A task that does nothing: the anchor the throughput benchmark compares runs against."""

from __future__ import annotations

from .app import celery_app


@celery_app.task(name="agentflow.noop", acks_late=True)
def noop(*_args, **_kwargs) -> None:
    return None
