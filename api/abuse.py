"""API abuse limits: requests a minute per client IP and per tenant, on the project's limiter.

Embedded mode counts in this process (a MemoryLimiter of its own); distributed mode in
Redis (`ratelimit.factory.redis_limiter`), so the limits hold across every API replica. Each
limit is a GCRA of `per_minute` with `burst` requests allowed at once. Over the limit the
answer is 429 with `Retry-After`.

- per IP: every request counts once (floods of bad tokens or unknown paths are limited
  too); /health and /health/ready are never limited. `RateLimitMiddleware` leaves the
  check pending, and `auth.authorize` (which every API route runs before its body) makes
  it together with the tenant's, in one round trip to Redis: two round trips cost a
  third of the submit path's CPU (bench/api_submit.py). A request that never reaches
  `authorize` (static files, unknown paths) is checked by the middleware before its
  answer goes out.
- per tenant: in `auth.authorize`, once the token says which tenant is calling.
- In `local` auth mode, requests from this machine (loopback) are not limited: they
  already act as the local admin.
- When Redis cannot be reached the limits let requests through (logged): the API stays
  available for reads while the broker is down.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..ratelimit.base import LimiterUnavailable, QueueLimits
from ..settings import Settings
from .auth import PENDING_IP, client_is_loopback, take_pending_ip
from .errors import ApiError, error_body

log = logging.getLogger("agentflow.api.abuse")

UNLIMITED_PATHS = ("/health", "/health/ready")
PRUNE_EVERY = 1000        # calls between sweeps of idle in-memory entries
_WARN_EVERY = 60.0


class RateLimited(ApiError):
    def __init__(self, who: str, per_minute: float, retry_after: float):
        seconds = max(1, math.ceil(retry_after))
        super().__init__(429, f"too many requests from this {who}: the limit is {per_minute:g} a minute; "
                              f"retry after {seconds} s", headers={"Retry-After": str(seconds)})


class ApiRateLimits:
    def __init__(self, settings: Settings, limiter=None):
        self.tenant_rpm = float(settings.rate_tenant_per_minute or 0)
        self.tenant_burst = max(1, int(settings.rate_tenant_burst or 1))
        self.ip_rpm = float(settings.rate_ip_per_minute or 0)
        self.ip_burst = max(1, int(settings.rate_ip_burst or 1))
        if limiter is None:
            if settings.distributed:
                from ..ratelimit.factory import redis_limiter

                limiter = redis_limiter(settings.redis, os.environ.get("AGENTFLOW_RATELIMIT_PREFIX"))
            else:
                from ..ratelimit.memory import MemoryLimiter

                limiter = MemoryLimiter()  # this app's own counters
        self.limiter = limiter
        self.in_memory = hasattr(limiter, "_queues")
        self._calls = 0
        self._last_warning = 0.0
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.tenant_rpm > 0 or self.ip_rpm > 0

    @staticmethod
    def exempt(scope: Scope, auth_mode: str) -> bool:
        return auth_mode == "local" and client_is_loopback(scope)

    def _acquire(self, key: str, rpm: float, burst: int) -> float:
        """0 when granted, else the seconds to wait."""
        try:
            decision = self.limiter.try_acquire(QueueLimits(key, max_requests_per_minute=rpm, burst_size=burst))
        except LimiterUnavailable as exc:
            return self._unavailable(exc)
        self._maybe_prune()
        return 0.0 if decision.allowed else max(decision.retry_after, 0.001)

    def _unavailable(self, exc: Exception) -> float:
        now = time.monotonic()
        if now - self._last_warning > _WARN_EVERY:
            self._last_warning = now
            log.warning("API rate limits are not enforced: %s", exc)
        return 0.0

    async def check_async(self, ip: tuple[str | None] | None, tenant: str | None) -> None:
        """The checks of one request without blocking the event loop: `ip` is the
        pending `(address,)` or None, `tenant` None when not checked. Raises RateLimited
        for the first limit refused (the address's first)."""
        checks = []
        if ip is not None and self.ip_rpm > 0:
            checks.append(("address", f"api:ip:{ip[0] or '-'}", self.ip_rpm, self.ip_burst))
        if tenant is not None and self.tenant_rpm > 0:
            checks.append(("tenant", f"api:tenant:{tenant}", self.tenant_rpm, self.tenant_burst))
        if not checks:
            return
        if self.in_memory:
            waits = [self._acquire(key, rpm, burst) for _, key, rpm, burst in checks]
        else:  # RedisLimiter: every check in one round trip
            queues = [QueueLimits(key, max_requests_per_minute=rpm, burst_size=burst) for _, key, rpm, burst in checks]
            try:
                decisions = await self.limiter.try_acquire_each_async(queues)
            except LimiterUnavailable as exc:
                self._unavailable(exc)  # fail open
                return
            waits = [0.0 if d.allowed else max(d.retry_after, 0.001) for d in decisions]
        for (who, _, rpm, _), wait in zip(checks, waits):
            if wait:
                raise RateLimited(who, rpm, wait)

    def _maybe_prune(self) -> None:
        """Forget in-memory entries whose limit is back to a full burst (exactly the
        state of a new entry), so a scan from many addresses cannot grow memory for good."""
        if not self.in_memory:
            return
        with self._lock:
            self._calls += 1
            if self._calls % PRUNE_EVERY:
                return
        lim = self.limiter
        with lim._lock:
            now = lim._clock()
            idle = [k for k, st in lim._queues.items()
                    if k.startswith("api:") and (st.tat_r is None or st.tat_r <= now)]
            for k in idle:
                del lim._queues[k]


class RateLimitMiddleware:
    """Per-IP request limit for every HTTP request (pure ASGI: streams pass through).
    The check is left pending for `auth.authorize`; if the request never reached it,
    it is made here before the answer starts (and a refusal replaces the answer)."""

    def __init__(self, app: ASGIApp, limits: ApiRateLimits, auth_mode: str):
        self.app = app
        self.limits = limits
        self.auth_mode = auth_mode

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] != "http" or self.limits.ip_rpm <= 0 or scope.get("path") in UNLIMITED_PATHS
                or self.limits.exempt(scope, self.auth_mode)):
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        scope[PENDING_IP] = [(client[0] if client else None,)]
        refused = False

        async def checked_send(message: Message) -> None:
            nonlocal refused
            if refused:
                return
            if message["type"] == "http.response.start" and scope[PENDING_IP]:
                try:
                    await self.limits.check_async(take_pending_ip(scope), None)
                except RateLimited as exc:
                    refused = True
                    await _send_error(send, exc)
                    return
            await send(message)

        await self.app(scope, receive, checked_send)


async def _send_error(send: Send, exc: ApiError) -> None:
    import json

    payload = json.dumps(error_body(str(exc.detail))).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in (exc.headers or {}).items()]
    await send({"type": "http.response.start", "status": exc.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
