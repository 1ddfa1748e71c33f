"""The FastAPI application: `agentflow serve` runs `uvicorn agentflow.api.main:create_app --factory`.

On startup the database is migrated and (by default in embedded mode) the example
workflows are saved. Runs go to the dispatcher: in-process threads in embedded mode,
Celery in distributed mode (REDIS_URL set). The built Studio is served at `/` after
every API route, so API paths always win.
"""

from __future__ import annotations

import json
import gc
import logging
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

import anyio
from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from pydantic import TypeAdapter

from ..graph.spec import Source, WorkflowSpec
from ..settings import Settings, get_settings
from ..store import crypto
from ..store.db import migrate, safe_url
from . import errors
from . import security
from .deps import Dispatcher, Services
from .examples import examples_enabled, load_examples
from .middleware import BodyLimitMiddleware, MetricsMiddleware
from .run_events import RunEventHub
from .routes import health, runs, schedules, schema, sources, workflows
from .routes import hooks as hook_routes, metrics_summary, trace, versions, webhooks as webhook_routes
from .static import mount_studio

log = logging.getLogger("agentflow.api")


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("agentflow")
    except Exception:
        return "0.0.0"


DESCRIPTION = """JSON WorkflowSpecs in, LangGraph runs out.

Every error is `{"detail": "...", "errors": [{"path", "message"}]}` with a 4xx status
(503 when the database or broker is down). Lists are cursor-paginated: pass
`next_cursor` back as `?cursor=`.
"""


def _startup(services: Services) -> None:
    url = services.settings.db_url
    try:
        migrate(url)
    except Exception as exc:
        raise RuntimeError(f"cannot prepare the database at {safe_url(url)}: {errors.db_reason(exc)}") from exc
    if examples_enabled(services.settings):
        try:
            load_examples(services.workflows)
            # the no-API-key example queries a bundled SQLite shop named by AGENTFLOW_SAMPLE_DSN
            from ..examples import ensure_sample_db

            ensure_sample_db(services.settings.home)
        except Exception:  # examples are a convenience; never block the server on them
            log.exception("loading the example workflows failed")
    if not services.settings.distributed:
        # Embedded runs live in this process: the ones a previous server left behind are
        # resumed when they never started, and closed with a reason when they were cut off.
        for run_id in services.runs.recover_interrupted():
            services.dispatcher.submit(run_id)
        rearm = getattr(getattr(services.dispatcher, "executor", None), "rearm", None)
        if rearm is not None:
            rearm()  # runs waiting for a person keep their deadlines across a restart


def create_app(settings: Settings | None = None, dispatcher: Dispatcher | None = None) -> FastAPI:
    settings = settings or get_settings()
    crypto.configure(settings)  # a malformed AGENTFLOW_ENCRYPTION_KEY stops the server here
    services = Services.build(settings, dispatcher)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await anyio.to_thread.run_sync(_startup, services)
        log.info("AgentFlow API ready (%s mode, database %s)", services.mode, safe_url(settings.db_url))
        # What start-up built lives as long as the server: keep the cyclic GC from walking
        # it again on every full collection (about 2% of the API's CPU under load).
        gc.freeze()
        app.state.run_events = RunEventHub(services)  # one event source for every SSE stream of runs
        try:
            async with app.state.collab, services.extra["mcp"].run():  # collaborative rooms, /mcp's task group
                yield
        finally:
            await app.state.run_events.aclose()
            services.close()

    app = FastAPI(title="AgentFlow", version=_version(), description=DESCRIPTION,
                  lifespan=lifespan, strict_content_type=False,
                  dependencies=[Depends(security.authorize)])  # auth + roles on every API route
    app.state.services = services
    security.prepare(app, services)
    errors.install(app)

    for module in (workflows, runs, sources, schedules, schema, health):
        app.include_router(module.router)
    # versions diff/rollback, trace + re-run, dashboard, inbound hooks, outbound webhooks
    for module in (versions, trace, metrics_summary, hook_routes, webhook_routes):
        app.include_router(module.router)
    from .routes import queues as queue_routes

    queue_routes.install(app, services)  # GET /queues + the limiter's gauges on /metrics
    from ..runs.webhooks import install as install_webhooks

    notify = None  # embedded: deliveries on threads
    if settings.distributed:  # one Celery task per delivery
        from ..workers.webhook_task import CeleryNotifier

        notify = CeleryNotifier(services.factory)
    install_webhooks(services, notify)  # outbound deliveries when runs end
    from . import collab

    collab.install(app, services)  # WebSocket /workflows/{id}/collab: live co-editing (Yjs)
    from . import mcp as mcp_api

    services.extra["mcp"] = mcp_api.install(app, services)  # /mcp: the workflows as MCP tools
    mount_studio(app, settings)  # last: the mount at "/" takes what no API route matched

    security.add_middleware(app, services)  # audit + per-IP limit, inside CORS
    origins = settings.cors_origin_list  # only the configured Studio origins may call from a browser
    if origins:
        app.add_middleware(CORSMiddleware, allow_origins=origins, allow_methods=["*"], allow_headers=["*"],
                           expose_headers=["Retry-After", "Location"])
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware)  # counts 413s too
    if settings.trusted_proxy_list:
        # outermost: the per-IP limit, the audit log and the loopback checks all see the
        # client the trusted proxy (deploy/nginx) names in X-Forwarded-For, not the proxy
        from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=settings.trusted_proxy_list)

    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    security.document(app)  # bearer auth, 401/403/429 in the document
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document plus the WorkflowSpec/Source schemas, and our error shape for 422."""
    if app.openapi_schema:
        return app.openapi_schema
    doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    components = doc.setdefault("components", {}).setdefault("schemas", {})
    template = "#/components/schemas/{model}"
    spec_schema = WorkflowSpec.model_json_schema(by_alias=True, ref_template=template)
    source_schema = TypeAdapter(Source).json_schema(ref_template=template)
    for extra in (spec_schema, source_schema):
        for name, definition in extra.pop("$defs", {}).items():
            components.setdefault(name, definition)
    components["WorkflowSpec"] = spec_schema
    components["Source"] = {"title": "Source", **source_schema}
    components.setdefault("ErrorResponse", {
        "title": "ErrorResponse", "type": "object", "required": ["detail"],
        "properties": {"detail": {"type": "string"},
                       "errors": {"type": "array", "items": {"$ref": "#/components/schemas/Problem"}}}})
    error_ref = {"$ref": "#/components/schemas/ErrorResponse"}
    for path_item in doc.get("paths", {}).values():
        for operation in path_item.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            for status, response in operation["responses"].items():
                content = response.get("content", {}).get("application/json")
                if content and content.get("schema", {}).get("$ref", "").endswith("/HTTPValidationError"):
                    content["schema"] = dict(error_ref)
    if "/HTTPValidationError" not in json.dumps(doc.get("paths", {})):
        components.pop("HTTPValidationError", None)
        components.pop("ValidationError", None)
    app.openapi_schema = doc
    return doc

