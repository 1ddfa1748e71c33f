"""Anchor tasks for the benchmarks: what raw Celery costs on the same worker processes."""

from __future__ import annotations

from .app import celery_app


@celery_app.task(name="agentflow.noop", acks_late=True)
def noop(*_args, **_kwargs) -> None:
    return None


@celery_app.task(name="agentflow.bench_step", acks_late=True, ignore_result=True)
def bench_step(key: str, payload: str) -> None:
    """One Redis SET and one Postgres INSERT of a step-row-sized payload: the work the
    throughput bench's anchor chain does per message (bench/throughput.py creates the table).
    Like the driver and node tasks it stores no Celery result, except the chain's last task
    (the bench reads that one to know the chain ended, as it reads a run's row)."""
    from sqlalchemy import text

    from . import resources

    resources.redis_client().set(f"af:bench:{key}", payload, ex=600)
    with resources.store().factory() as sess:
        sess.execute(text("INSERT INTO bench_anchor (key, payload) VALUES (:k, :p)"), {"k": key, "p": payload})
        sess.commit()
