"""A Redis lease: held while its owner lives, gone soon after the owner dies.

Used so only one driver runs a run and only one worker executes a step at a time, even
when the broker delivers a message twice. The lock is redis-py's `Lock` (a key with the
owner's token and a TTL, released and renewed by its Lua scripts); what this adds is the
owner's heartbeat: a background thread renews it (`reacquire`) every ttl/3, so a killed
process stops renewing and the lease expires after `ttl` seconds, and takes it back when
the key vanished while the owner lives (a Redis restart keeps nothing).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Callable

from redis.exceptions import LockError, LockNotOwnedError
from redis.lock import Lock

log = logging.getLogger(__name__)
_HOST = socket.gethostname()  # asked once: a lease is taken for every run and every step


class Lease:
    def __init__(self, client, key: str, ttl: int = 30, on_renew: Callable[[], None] | None = None):
        self.client, self.key, self.ttl = client, key, ttl
        # who holds it, readable in Redis (GET <key>) when a run looks stuck
        self.token = f"{_HOST}:{time.time_ns()}:{threading.get_ident()}"
        self.on_renew = on_renew
        self.lost = False  # another owner took the key after it had vanished
        self._stop = threading.Event()
        # thread_local=False: the renewing thread must see the token the owner's thread set
        self._lock = Lock(client, key, timeout=ttl, blocking=False, thread_local=False)

    def acquire(self) -> bool:
        if not self._lock.acquire(blocking=False, token=self.token):
            return False
        threading.Thread(target=self._renew, daemon=True, name=f"lease:{self.key}").start()
        return True

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                self._lock.reacquire()  # the TTL back to `ttl`, if the key is still ours
            except LockNotOwnedError:
                if not self._stop.is_set():
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
        if self._lock.acquire(blocking=False, token=self.token):
            log.warning("lease %s had vanished (Redis restarted?); taken back", self.key)
        else:
            self.lost = True
            log.warning("lease %s was taken over by another owner", self.key)

    def release(self) -> None:
        self._stop.set()
        try:
            self._lock.release()  # deletes the key only if it still holds our token
        except LockError:
            pass  # never held, expired or taken over meanwhile: nothing of ours to delete
        except Exception:
            log.warning("could not release lease %s; it expires in %s s", self.key, self.ttl)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.release()
