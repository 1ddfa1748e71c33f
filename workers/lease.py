"""A Redis lease: held while its owner lives, gone soon after the owner dies.

Used so only one driver runs a run and only one worker executes a step at a time, even
when the broker delivers a message twice. A background thread renews the lease; a
killed process stops renewing and the lease expires after `ttl` seconds.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Callable

log = logging.getLogger(__name__)
_HOST = socket.gethostname()  # asked once: a lease is taken for every run and every step

_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""
_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('expire', KEYS[1], ARGV[2]) end
return 0
"""


class Lease:
    def __init__(self, client, key: str, ttl: int = 30, on_renew: Callable[[], None] | None = None):
        self.client, self.key, self.ttl = client, key, ttl
        self.token = f"{_HOST}:{time.time_ns()}:{threading.get_ident()}"
        self.on_renew = on_renew
        self.lost = False  # another owner took the key after it had vanished
        self._stop = threading.Event()

    def acquire(self) -> bool:
        if not self.client.set(self.key, self.token, nx=True, ex=self.ttl):
            return False
        threading.Thread(target=self._renew, daemon=True, name=f"lease:{self.key}").start()
        return True

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                if not self.client.eval(_RENEW, 1, self.key, self.token, self.ttl):
                    self._reclaim()
            except Exception:  # a blip must not kill the owner; the lease may just expire
                log.warning("could not renew lease %s", self.key)
            if self.on_renew:
                try:
                    self.on_renew()
                except Exception:
                    log.warning("lease %s: heartbeat failed", self.key)

    def _reclaim(self) -> None:
        """The key is gone while we still live: Redis restarted (it keeps nothing) or the
        lease expired while Redis was unreachable. Take it back unless another owner has,
        so a duplicate delivery cannot start the same work beside us."""
        if self.client.set(self.key, self.token, nx=True, ex=self.ttl):
            log.warning("lease %s had vanished (Redis restarted?); taken back", self.key)
        else:
            self.lost = True
            log.warning("lease %s was taken over by another owner", self.key)

    def release(self) -> None:
        self._stop.set()
        try:
            self.client.eval(_RELEASE, 1, self.key, self.token)
        except Exception:
            log.warning("could not release lease %s; it expires in %s s", self.key, self.ttl)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.release()
