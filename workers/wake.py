"""Waking a run: whatever it waited for is done (a step, an answer, a child run, a deadline).

The news flag is set first; a driver advancing the run right now sees it when it stops and
advances again, so no wake-up is lost and at most one driver message per run is in flight
for news that arrives while it works.
"""

from __future__ import annotations

from . import keys

NEWS_TTL = 24 * 3600


def wake(client, app, run_id: str) -> bool:
    """Returns True when a driver message was sent (no driver held the run)."""
    client.set(keys.run_news(run_id), "1", ex=NEWS_TTL)
    if client.exists(keys.run_lock(run_id)):
        return False
    from .app import RUN_QUEUE

    app.send_task("agentflow.run", args=[run_id], queue=RUN_QUEUE)
    return True
