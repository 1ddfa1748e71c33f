"""Outbound webhook delivery in distributed mode, on the `agentflow.api` queue.

One task per delivery; a failed attempt retries the task with an exponential countdown
(AGENTFLOW_WEBHOOK_BACKOFF * 2**(attempt-1)) up to AGENTFLOW_WEBHOOK_ATTEMPTS attempts,
so no worker sleeps between attempts. Every attempt is a row of webhook_deliveries.
`CeleryNotifier` sends these tasks when a run ends (the embedded executor's own notifier
delivers on threads: runs/webhooks.py, which imports no Celery).
"""

from __future__ import annotations

from ..runs.webhooks import TASK_NAME, TASK_QUEUE, DeliveryConfig, Notifier, attempt
from ..store.hooks import HookStore
from . import resources
from .app import celery_app


@celery_app.task(name=TASK_NAME, bind=True, acks_late=True, max_retries=None, ignore_result=True)
def deliver(self, webhook_id: str, run_id: str, event: str, delivery_id: int | None = None) -> str:
    runs = resources.store()
    hooks = HookStore(runs.factory)
    webhook = hooks.webhook(webhook_id)
    record = runs.get(run_id)
    if webhook is None or record is None:
        return "gone"
    cfg = DeliveryConfig.from_env()
    number = self.request.retries + 1
    outcome = attempt(hooks, webhook, record, event, number, cfg, delivery_id)
    if outcome.delivered:
        return "delivered"
    if outcome.retry and number < cfg.attempts:
        raise self.retry(countdown=cfg.delay(number), max_retries=None)
    return "failed"


class CeleryNotifier(Notifier):
    """Distributed mode: one `agentflow.webhooks.deliver` task per delivery."""

    def deliver(self, webhook, record, event, delivery_id) -> None:
        celery_app.send_task(TASK_NAME, args=[webhook["id"], record["run_id"], event, delivery_id],
                             queue=TASK_QUEUE)


def celery_notifier(factory) -> CeleryNotifier:
    return CeleryNotifier(factory)
