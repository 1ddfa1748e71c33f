"""Waking a run: whatever it waited for is done (a step, an answer, a child run, a deadline).

The news flag is set first; a driver advancing the run right now sees it when it stops and
advances again, so no wake-up is lost and at most one driver message per run is in flight
for news that arrives while it works.
"""

from __future__ import annotations

from redis.commands.core import Script

from . import keys

NEWS_TTL = 24 * 3600
# KEYS: news, run lease. ARGV: news ttl. Sets the news; returns whether a driver holds the run.
_NEWS_AND_HOLDER = Script(None, b"""
redis.call('set', KEYS[1], '1', 'EX', ARGV[1])
return redis.call('exists', KEYS[2])
""")


def wake(client, app, run_id: str) -> bool:
    """Returns True when a driver message was sent (no driver held the run)."""
    if _NEWS_AND_HOLDER(keys=[keys.run_news(run_id), keys.run_lock(run_id)], args=[NEWS_TTL], client=client):
        return False
    from .app import RUN_QUEUE

    app.send_task("agentflow.run", args=[run_id], queue=RUN_QUEUE)
    return True
