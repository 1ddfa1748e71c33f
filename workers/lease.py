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

from redis.commands.core import Script
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
        self._start_renewing()
        return True

    def acquire_or_flag(self, flag: str, flag_ttl: int) -> bool:
        """Take the lease and clear `flag`; or, when another owner holds it, set `flag` so
        that owner sees it before it lets go (`release_unless`). One atomic script, so a
        flag is never set after its holder's last look, and never cleared unseen."""
        if not _TAKE_OR_FLAG(keys=[self.key, flag], args=[self.token, int(self.ttl * 1000), flag_ttl],
                             client=self.client):
            return False
        self._lock.local.token = self.token.encode()  # redis-py's Lock renews and releases by it
        self._start_renewing()
        return True

    def release_unless(self, flag: str) -> str:
        """Let go of the lease unless `flag` is set, atomically: KEPT (the flag was set: it
        is cleared and the lease kept, so the owner goes on), RELEASED, or LOST (the lease
        was no longer ours; the flag, if set, is left for whoever wakes the work)."""
        outcome = (KEPT, RELEASED, LOST)[int(_RELEASE_UNLESS(keys=[self.key, flag], args=[self.token],
                                                              client=self.client))]
        if outcome != KEPT:
            self._stop.set()
        return outcome

    def _start_renewing(self) -> None:
        threading.Thread(target=self._renew, daemon=True, name=f"lease:{self.key}").start()

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


KEPT, RELEASED, LOST = "kept", "released", "lost"
# KEYS: lease, flag. ARGV: token, ttl ms, flag ttl s.
_TAKE_OR_FLAG = Script(None, b"""
if redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  redis.call('del', KEYS[2])
  return 1
end
redis.call('set', KEYS[2], '1', 'EX', ARGV[3])
return 0
""")
# KEYS: lease, flag. ARGV: token. Returns 0 kept (flag cleared), 1 released, 2 not ours.
_RELEASE_UNLESS = Script(None, b"""
if redis.call('get', KEYS[1]) ~= ARGV[1] then
  return 2
end
if redis.call('del', KEYS[2]) == 1 then
  return 0
end
redis.call('del', KEYS[1])
return 1
""")
