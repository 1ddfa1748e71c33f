"""Guards around third-party behaviour that would otherwise take a worker down.

kombu 5.x, redis transport: after the broker connection drops, a channel of the old
connection is left with no connection (or a transport whose client is gone). Two things
then still use it and die on an AttributeError instead of a connection error:

- closing it puts the worker's unacknowledged messages back (`QoS.restore_unacked`);
- a task that was running across the reconnect (acks_late: every run driver) acks its
  message on it when it ends.

Either AttributeError escapes kombu's and celery's connection-error handling, so celery
logs "Unrecoverable error" and the whole worker exits (found by tests/chaos, Redis
restart: first a node worker, then the run-driver worker died). Both actions are
meaningless on a dead connection, so `Channel.conn_or_acquire` now raises the connection
error they already handle: celery logs "Couldn't ack" and keeps consuming on its new
connection. An unacked message comes back after the visibility timeout (tasks are
idempotent); if Redis restarted empty, the driver re-sends a lost node task and the recovery
sweep re-enqueues a lost run.

Still needed with kombu 5.7.0 (read in its transport/redis.py: `QoS.restore_unacked` ->
`Channel.conn_or_acquire` -> `_create_client` -> `_connparams` reads `connection.client`,
which `Connection._do_close_transport` set to None). pyproject.toml pins kombu to 5.7.x;
tests/test_dependency_pins.py fails the day a kombu closes such a channel cleanly.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager

log = logging.getLogger(__name__)

_installed = False


def _connection_gone(channel) -> bool:
    connection = getattr(channel, "connection", None)
    return connection is None or getattr(connection, "client", None) is None


def guard_dead_channels() -> None:
    global _installed
    if _installed:
        return
    try:
        import redis.exceptions
        from kombu.transport import redis as kombu_redis
    except ImportError:  # pragma: no cover - kombu[redis] is a dependency
        return
    original = kombu_redis.Channel.conn_or_acquire

    @contextmanager
    def conn_or_acquire(self, client=None):
        if client is None and _connection_gone(self):
            raise redis.exceptions.ConnectionError("this channel's broker connection is closed")
        with original(self, client) as acquired:
            yield acquired

    conn_or_acquire.__wrapped__ = original  # type: ignore[attr-defined]
    kombu_redis.Channel.conn_or_acquire = conn_or_acquire

    restore = kombu_redis.QoS.restore_unacked

    def restore_unacked(self, client=None):
        if client is None and _connection_gone(self.channel):
            # nothing can be put back through a dead connection; let the close finish
            log.warning("broker connection lost with %d unacknowledged message(s); the broker "
                        "re-delivers them after the visibility timeout", len(self._delivered))
            self._delivered.clear()
            return None
        return restore(self, client)

    restore_unacked.__wrapped__ = restore  # type: ignore[attr-defined]
    kombu_redis.QoS.restore_unacked = restore_unacked
    _installed = True
