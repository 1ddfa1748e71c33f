"""Webhooks: the signature both directions use, and outbound delivery when a run ends.

Signature (inbound triggers and outbound deliveries alike):

    X-AgentFlow-Timestamp: <unix seconds>
    X-AgentFlow-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<raw body>">

keyed with the value of the environment variable the hook or webhook names
(`secret_env`). A receiver refuses a timestamp more than 5 minutes away from its clock,
so a captured request cannot be replayed later.

Outbound: when a run ends, every enabled webhook of its tenant that wants the event
(`run.succeeded`, `run.failed`, `run.cancelled`) and the workflow gets a signed POST
with `{"event", "webhook_id", "delivery_id", "sent_at", "run": <the run record>}`. A 2xx
answer is delivered; anything else (or no answer) is retried with exponential backoff
(`AGENTFLOW_WEBHOOK_BACKOFF` seconds, doubled each time: 0.5, 1, 2, 4) up to
`AGENTFLOW_WEBHOOK_ATTEMPTS` (5) attempts. Every attempt is a row of
`webhook_deliveries`. Embedded mode delivers on a background thread; distributed mode
sends the Celery task `agentflow.webhooks.deliver` to the `agentflow.api` queue, which
retries itself with a countdown.

Targets go through the api nodes' private-address guard (no loopback, private or
link-local addresses, redirects not followed) unless AGENTFLOW_WEBHOOKS_ALLOW_PRIVATE=1.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Protocol

import httpx

from ..graph.errors import BlockedAddressError, StepError
from ..graph.secrets import MissingSecret, SecretNotAllowed, read_secret
from ..store.hooks import HookStore

log = logging.getLogger("agentflow.webhooks")

SIGNATURE_HEADER = "X-AgentFlow-Signature"
TIMESTAMP_HEADER = "X-AgentFlow-Timestamp"
TOLERANCE_SECONDS = 300
EVENTS = {"succeeded": "run.succeeded", "failed": "run.failed", "cancelled": "run.cancelled"}
TASK_NAME = "agentflow.webhooks.deliver"
TASK_QUEUE = "agentflow.api"


# ---------------------------------------------------------------- signatures


def sign(key: str, timestamp: int | str, body: bytes) -> str:
    mac = hmac.new(key.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def signed_headers(key: str | None, body: bytes, now: float | None = None) -> dict[str, str]:
    """Timestamp and signature headers for `body` (none without a key)."""
    if not key:
        return {}
    ts = str(int(now if now is not None else time.time()))
    return {TIMESTAMP_HEADER: ts, SIGNATURE_HEADER: sign(key, ts, body)}


def check_signature(key: str, timestamp: str | None, signature: str | None, body: bytes,
                    now: float | None = None, tolerance: float = TOLERANCE_SECONDS) -> str | None:
    """None when the request is authentic and fresh, else why not."""
    if not timestamp or not signature:
        return f"missing {TIMESTAMP_HEADER} or {SIGNATURE_HEADER} header"
    try:
        ts = int(timestamp.strip())
    except ValueError:
        return f"{TIMESTAMP_HEADER} must be unix seconds"
    if abs((now if now is not None else time.time()) - ts) > tolerance:
        return f"{TIMESTAMP_HEADER} is more than {tolerance:.0f} s away from the server's clock"
    if not hmac.compare_digest(sign(key, ts, body), signature.strip()):
        return "signature does not match"
    return None


REPLAY_TTL = 2 * TOLERANCE_SECONDS  # longer than a signature stays fresh


def replay_key(hook_id: str, signature: str) -> str:
    return hashlib.sha256(f"{hook_id}:{signature}".encode()).hexdigest()


class ReplayGuard(Protocol):
    """Remembers accepted signed triggers: the same signed request is never accepted twice.

    `claim` is atomic: of any number of identical requests at once, exactly one gets None
    and starts the run, then `settle`s the key with the run id (or `release`s it when the
    run could not be started); every other gets the earlier run id ("" while that run is
    still being started). Embedded: store.hooks.HookReplays (a unique row); distributed:
    RedisReplayGuard (SET NX), shared by every API process."""

    def claim(self, key: str) -> str | None: ...
    def settle(self, key: str, run_id: str) -> None: ...
    def release(self, key: str) -> None: ...


class RedisReplayGuard:
    def __init__(self, redis_client, ttl: float = REPLAY_TTL):
        self.redis, self.ttl = redis_client, int(ttl)

    def claim(self, key: str) -> str | None:
        name = f"af:hook-seen:{key}"
        if self.redis.set(name, "", nx=True, ex=self.ttl):
            return None
        value = self.redis.get(name) or b""
        return value.decode() if isinstance(value, bytes) else value

    def settle(self, key: str, run_id: str) -> None:
        self.redis.set(f"af:hook-seen:{key}", run_id, xx=True, ex=self.ttl)

    def release(self, key: str) -> None:
        self.redis.delete(f"af:hook-seen:{key}")


# ---------------------------------------------------------------- delivery


@dataclass(frozen=True)
class DeliveryConfig:
    attempts: int = 5
    backoff: float = 0.5
    timeout: float = 10.0
    allow_private: bool = False

    @classmethod
    def from_env(cls, env=None) -> "DeliveryConfig":
        env = os.environ if env is None else env
        return cls(attempts=max(1, int(env.get("AGENTFLOW_WEBHOOK_ATTEMPTS", "5"))),
                   backoff=max(0.0, float(env.get("AGENTFLOW_WEBHOOK_BACKOFF", "0.5"))),
                   timeout=float(env.get("AGENTFLOW_WEBHOOK_TIMEOUT", "10")),
                   allow_private=env.get("AGENTFLOW_WEBHOOKS_ALLOW_PRIVATE", "") in ("1", "true", "yes"))

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        return self.backoff * (2 ** (attempt - 1))


def event_of(record: dict[str, Any]) -> str | None:
    return EVENTS.get(str(record.get("status")))


def payload(event: str, webhook_id: str, delivery_id: int | None, record: dict[str, Any]) -> bytes:
    doc = {"event": event, "webhook_id": webhook_id, "delivery_id": delivery_id,
           "sent_at": datetime.now(timezone.utc).isoformat(), "run": record}
    return json.dumps(doc, default=str, ensure_ascii=False, separators=(",", ":")).encode()


@dataclass
class Outcome:
    delivered: bool
    retry: bool
    response_code: int | None = None
    error: str | None = None


def post_once(webhook: dict[str, Any], body: bytes, event: str, delivery_id: int | None,
              cfg: DeliveryConfig) -> Outcome:
    """One signed POST; never raises."""
    from ..graph.sources import http as guarded

    key = None
    if webhook.get("secret_env"):
        try:
            key = read_secret(webhook["secret_env"])
        except (SecretNotAllowed, MissingSecret) as exc:
            return Outcome(False, False, None, f"{exc}: cannot sign the delivery")
    headers = {"Content-Type": "application/json", "User-Agent": "AgentFlow-Webhooks/1",
               "X-AgentFlow-Event": event, "X-AgentFlow-Delivery": str(delivery_id or ""),
               **signed_headers(key, body)}
    try:
        resp = guarded.client(cfg.allow_private).post(webhook["url"], content=body, headers=headers,
                                                      timeout=httpx.Timeout(cfg.timeout))
    except BlockedAddressError as exc:
        return Outcome(False, False, None, f"{exc} (AGENTFLOW_WEBHOOKS_ALLOW_PRIVATE=1 allows it)")
    except httpx.TimeoutException:
        return Outcome(False, True, None, f"no answer within {cfg.timeout:g} s")
    except httpx.HTTPError as exc:
        return Outcome(False, True, None, f"could not connect: {exc or type(exc).__name__}")
    except (StepError, ValueError) as exc:  # e.g. a host that does not resolve or encode: say so, don't die
        return Outcome(False, True, None, f"could not connect: {exc}")
    if 200 <= resp.status_code < 300:
        return Outcome(True, False, resp.status_code)
    return Outcome(False, True, resp.status_code, f"HTTP {resp.status_code}")


def attempt(store: HookStore, webhook: dict[str, Any], record: dict[str, Any], event: str, number: int,
            cfg: DeliveryConfig, delivery_id: int | None) -> Outcome:
    """Attempt number `number` of one delivery, recorded in webhook_deliveries."""
    outcome = post_once(webhook, payload(event, webhook["id"], delivery_id, record), event, delivery_id, cfg)
    error = outcome.error
    if not outcome.delivered and outcome.retry and number < cfg.attempts:
        error = f"{error}; retrying in {cfg.delay(number):g} s"
    store.record_attempt(webhook, record["run_id"], event, number,
                         "delivered" if outcome.delivered else "failed", outcome.response_code, error,
                         delivery_id if number == 1 else None)
    if not outcome.delivered:
        log.warning("webhook %s, run %s, attempt %d/%d: %s", webhook["id"], record["run_id"], number,
                    cfg.attempts, outcome.error)
    return outcome


def deliver_with_retries(store: HookStore, webhook: dict[str, Any], record: dict[str, Any], event: str,
                         delivery_id: int | None, cfg: DeliveryConfig,
                         sleep: Callable[[float], None] = time.sleep) -> bool:
    for number in range(1, cfg.attempts + 1):
        outcome = attempt(store, webhook, record, event, number, cfg, delivery_id)
        if outcome.delivered:
            return True
        if not outcome.retry or number == cfg.attempts:
            return False
        sleep(cfg.delay(number))
    return False


# ---------------------------------------------------------------- notifiers (run ended)


class Notifier:
    """Called with the record of a run that ended: claims a delivery of every webhook that
    wants it (so two processes never send one twice), then `deliver`s each."""

    def __init__(self, factory):
        self.store = HookStore(factory)

    def claims(self, record: dict[str, Any]) -> list[tuple[dict, str, int]]:
        event = event_of(record)
        if event is None or not record.get("run_id"):
            return []
        tenant = record.get("tenant_id")
        if tenant is None:
            from ..store.models import Run
            from ..store.db import session_scope

            with session_scope(self.store.factory) as s:
                run = s.get(Run, record["run_id"])
                tenant = run.tenant_id if run is not None else None
        if tenant is None:
            return []
        out = []
        for webhook in self.store.matching(tenant, record.get("workflow_id"), event):
            delivery_id = self.store.claim(webhook, record["run_id"], event)
            if delivery_id is not None:
                out.append((webhook, event, delivery_id))
        return out

    def __call__(self, record: dict[str, Any]) -> None:
        for webhook, event, delivery_id in self.claims(record):
            self.deliver(webhook, record, event, delivery_id)

    def deliver(self, webhook: dict[str, Any], record: dict[str, Any], event: str,
                delivery_id: int) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


class ThreadNotifier(Notifier):
    """Embedded mode: each delivery runs (with its retries) on a daemon thread.
    (Distributed mode: workers/webhook_task.py's CeleryNotifier.)"""

    def deliver(self, webhook, record, event, delivery_id) -> None:
        threading.Thread(target=deliver_with_retries, name=f"webhook:{webhook['id']}", daemon=True,
                         args=(self.store, webhook, record, event, delivery_id, DeliveryConfig.from_env())).start()


def install(services, notify: Notifier | None = None) -> Callable[[dict[str, Any]], None]:
    """Deliver webhooks when runs of this API end: the embedded executor's runs, and runs
    a cancel ends (`services.extra["run_ended"]`, called by POST /runs/{id}/cancel).
    `notify`: how (default: on threads, the embedded way; the API passes the Celery one
    in distributed mode, so this module never imports Celery)."""
    notify = notify or ThreadNotifier(services.factory)
    executor = getattr(services.dispatcher, "executor", None)
    listeners = getattr(executor, "listeners", None)
    if isinstance(listeners, list):
        listeners.append(notify)
    services.extra["run_ended"] = notify
    return notify
