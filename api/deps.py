"""What routes depend on: the tenant, the repositories and the run dispatcher.

Routes never care which mode they run in: they call `dispatcher.submit(run_id)` and read
live events from `dispatcher.bus`. Embedded mode wraps an in-process `EmbeddedExecutor`;
distributed mode uses `agentflow.workers.dispatch.CeleryDispatcher` (Celery + Redis).

`current_tenant` is the one place auth replaces to scope every request to a tenant.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Annotated, Any, Protocol, runtime_checkable

from fastapi import Depends, Request
from sqlalchemy.orm import Session, sessionmaker

from ..runs.events import EventBus
from ..settings import Settings
from ..store.collab import CollabStore
from ..store.db import session_factory
from ..store.models import DEFAULT_TENANT
from ..store.runs import TERMINAL, RunStore
from ..store.schedules import ScheduleStore
from ..store.sources import SourceStore
from ..store.workflows import WorkflowStore
from .auth import Principal, authorize
from .errors import ApiError

log = logging.getLogger("agentflow.api")


async def current_tenant(principal: Annotated[Principal, Depends(authorize)]) -> str:
    """The tenant of the request: the `tenant` claim of its token (api/auth.py).
    Every repository call of a route takes this value, so a row of another tenant is
    never found (404, not 403)."""
    if principal.via == "public":  # a route listed as public must not read tenant data
        raise ApiError(401, "authentication required", headers={"WWW-Authenticate": "Bearer"})
    return principal.tenant or DEFAULT_TENANT


# ---------------------------------------------------------------- dispatcher


@runtime_checkable
class Dispatcher(Protocol):
    """Starts stored runs somewhere and publishes their live events on `bus`."""

    mode: str
    bus: EventBus

    def submit(self, run_id: str) -> Any: ...

    def cancel(self, run_id: str) -> None: ...

    def execute(self, run_id: str, timeout: float) -> None:
        """Run to the end (or until `timeout`); the caller reads the record afterwards."""
        ...

    def close(self) -> None: ...


class EmbeddedDispatcher:
    """Runs in this process on the EmbeddedExecutor's thread pool."""

    mode = "embedded"

    def __init__(self, executor):
        self.executor = executor
        self.bus = executor.bus

    def submit(self, run_id: str) -> Any:
        return self.executor.submit(run_id)

    def cancel(self, run_id: str) -> None:
        # The store flag set by RunStore.cancel is enough: the executor checks it at
        # every step boundary.
        return None

    def execute(self, run_id: str, timeout: float) -> None:
        self.executor.execute(run_id)

    def close(self) -> None:
        self.executor.shutdown()


class RemoteDispatcher:
    """Adapts `agentflow.workers.dispatch.CeleryDispatcher` to the Dispatcher protocol."""

    mode = "distributed"

    def __init__(self, inner, store: RunStore):
        self.inner = inner
        self.store = store
        self.bus = inner.bus

    def submit(self, run_id: str) -> Any:
        return self.inner.submit(run_id)

    def cancel(self, run_id: str) -> None:
        cancel = getattr(self.inner, "cancel", None)
        if cancel is not None:
            cancel(run_id)

    def execute(self, run_id: str, timeout: float) -> None:
        """Submit, then wait for the run to end (the API never runs nodes itself)."""
        self.inner.submit(run_id)
        deadline = time.monotonic() + timeout
        delay = 0.05
        while time.monotonic() < deadline:
            if self.store.status(run_id) in TERMINAL:
                return
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)

    def ping_broker(self) -> bool:
        ping = getattr(self.inner, "ping_broker", None)
        if ping is not None:
            return bool(ping())
        return bool(self.bus.client.ping())

    def queue_depths(self) -> dict[str, int]:
        return self.inner.queue_depths()

    def ping_workers(self) -> Any:
        ping = getattr(self.inner, "ping_workers", None)
        if ping is None:
            raise RuntimeError("the dispatcher cannot ping workers (ping_workers missing)")
        return ping()

    def close(self) -> None:
        close = getattr(self.inner, "close", None)
        if close is not None:
            close()


def _limiter():
    """The in-process limiter: embedded mode has no Redis to share counters through."""
    try:
        from ..ratelimit.factory import memory_limiter
    except ImportError:
        log.warning("agentflow.ratelimit.factory is not available: embedded runs are not rate limited")
        return None
    return memory_limiter()


def build_dispatcher(settings: Settings, store: RunStore) -> Dispatcher:
    if settings.distributed:
        try:
            from ..workers.dispatch import CeleryDispatcher
        except ImportError as exc:
            raise RuntimeError(
                "distributed mode (REDIS_URL is set) needs agentflow.workers.dispatch.CeleryDispatcher, "
                f"which cannot be imported: {exc}. Unset REDIS_URL to serve in embedded mode."
            ) from exc
        return RemoteDispatcher(CeleryDispatcher(settings.redis), store)

    from ..runs.embedded import EmbeddedExecutor
    from ..runs.events import MemoryEventBus

    executor = EmbeddedExecutor(store, MemoryEventBus(), limiter=_limiter(),
                                workers=max(1, settings.embedded_workers),
                                checkpoints=settings.home / "checkpoints.sqlite",
                                child_workers=settings.child_run_workers)
    return EmbeddedDispatcher(executor)


# ---------------------------------------------------------------- services


@dataclass
class Services:
    settings: Settings
    factory: sessionmaker[Session]
    runs: RunStore
    workflows: WorkflowStore
    sources: SourceStore
    schedules: ScheduleStore
    dispatcher: Dispatcher
    collab: CollabStore
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def mode(self) -> str:
        return "distributed" if self.settings.distributed else "embedded"

    @classmethod
    def build(cls, settings: Settings, dispatcher: Dispatcher | None = None) -> "Services":
        factory = session_factory(settings.db_url)
        runs = RunStore(factory)
        return cls(settings=settings, factory=factory, runs=runs, workflows=WorkflowStore(factory),
                   sources=SourceStore(factory), schedules=ScheduleStore(factory),
                   dispatcher=dispatcher or build_dispatcher(settings, runs), collab=CollabStore(factory))

    def close(self) -> None:
        try:
            self.dispatcher.close()
        except Exception:  # shutting down: nothing useful to do with it
            log.exception("closing the dispatcher failed")


async def get_services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]
TenantDep = Annotated[str, Depends(current_tenant)]
PrincipalDep = Annotated[Principal, Depends(authorize)]


def save_workflow(svc: Services, tenant: str, principal: Principal, spec) -> dict[str, Any]:
    """Save `spec` as a new version by the caller; the version names everyone who edited
    the workflow's shared document (api/collab.py) since the version before."""
    record, _ = svc.workflows.save(tenant, spec, author=principal.subject,
                                   editors=svc.collab.editors(tenant, spec.id))
    return record
