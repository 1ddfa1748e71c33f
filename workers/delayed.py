"""Messages sent later: a Redis sorted set, moved to the queues by one pump in the fleet.

A node task that must wait for a rate-limit grant, and a human node's deadline, are not
Celery countdowns: an ETA message sits in a worker's memory, and one older than the broker's
visibility timeout is delivered again. Here a waiting message is a member of `af:delayed`
scored by its due time, in Redis, holding nothing; the pump (one process at a time, under a
lease) sends each when it is due, then removes it. A pump killed in between sends it again
after its lease expires: every message it moves is idempotent by its task id or step key.
"""

from __future__ import annotations

import json
import logging
import time

from . import keys

log = logging.getLogger(__name__)
BATCH = 500


def send_later(client, task: str, args: list, queue: str, due: float, task_id: str | None = None,
               kwargs: dict | None = None) -> None:
    member = json.dumps({"task": task, "args": args, "kwargs": kwargs or {}, "queue": queue, "id": task_id},
                        separators=(",", ":"), sort_keys=True, default=str)
    client.zadd(keys.DELAYED, {member: due})


def next_due(client) -> float | None:
    first = client.zrange(keys.DELAYED, 0, 0, withscores=True)
    return float(first[0][1]) if first else None


# Remove a sent member only if it still has the due time it was sent with: the task it became
# may already have run and put the same member back with a later due time (a rate-limited step
# denied again), and a plain ZREM would delete that new entry, losing the step for good.
_REMOVE_SENT = """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) == tonumber(ARGV[2]) then return redis.call('ZREM', KEYS[1], ARGV[1]) end
return 0
"""


def pump(client, app, now: float | None = None) -> int:
    """Send every due message (call with the pump lease held); returns how many."""
    now = time.time() if now is None else now
    sent = 0
    remove_sent = client.register_script(_REMOVE_SENT)
    while True:
        # scores as Redis wrote them (exact doubles, no float() round trip in between)
        due = client.zrangebyscore(keys.DELAYED, "-inf", now, start=0, num=BATCH, withscores=True,
                                   score_cast_func=lambda raw: raw)
        if not due:
            return sent
        for member, score in due:
            try:
                msg = json.loads(member)
                app.send_task(msg["task"], args=msg["args"], kwargs=msg["kwargs"], queue=msg["queue"],
                              task_id=msg["id"])
            except (ValueError, KeyError):
                log.error("dropping a malformed delayed message: %.200s", member)
            remove_sent(keys=[keys.DELAYED], args=[member, score])
            sent += 1
        if len(due) < BATCH:
            return sent


def waiting_count(client) -> int:
    return int(client.zcard(keys.DELAYED))
