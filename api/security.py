"""Wires the security parts into the app (called by `main.create_app`).

- `authorize` (auth.py): the app-wide dependency: token -> Principal, per-tenant limit,
  the route's role from roles.PERMISSIONS;
- `prepare`: the key configuration, the local admin token (local mode), the limits, the
  /auth and /audit routes, log redaction;
- `add_middleware`: the audit log (innermost) and the per-IP limit.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI

from ..graph.secrets import install_log_redaction
from ..store.audit import AuditStore
from .abuse import ApiRateLimits, RateLimitMiddleware
from .audit import AuditMiddleware
from .auth import AuthConfig, authorize  # noqa: F401  (authorize is re-exported for main.py)

log = logging.getLogger("agentflow.api.auth")

# uvicorn's loggers have handlers of their own (records do not reach the root's)
_LOGGERS = ("", "uvicorn", "uvicorn.error", "uvicorn.access", "agentflow")


def prepare(app: FastAPI, services) -> None:
    from .routes import audit as audit_routes
    from .routes import auth as auth_routes

    settings = services.settings
    for name in _LOGGERS:
        install_log_redaction(logging.getLogger(name))
    cfg = AuthConfig.from_settings(settings)
    app.state.auth = cfg
    limits = ApiRateLimits(settings)
    app.state.api_limits = limits if limits.enabled else None
    services.extra["audit"] = AuditStore(services.factory)
    app.include_router(auth_routes.router)
    app.include_router(audit_routes.router)
    if cfg.mode == "local":
        cfg.local_token()  # written to AGENTFLOW_HOME on first start, never logged
    elif cfg.mode == "off":
        log.warning("AGENTFLOW_AUTH=off: the API accepts every request as the admin of tenant 'default'")
    elif not (cfg.public_key or cfg.jwks_url) and cfg.secret_source != "AGENTFLOW_JWT_SECRET":
        log.warning("AGENTFLOW_AUTH=required without AGENTFLOW_JWT_SECRET, AGENTFLOW_JWT_PUBLIC_KEY or "
                    "AGENTFLOW_JWKS_URL: tokens are signed with the secret in %s, so only servers sharing "
                    "that file accept them", cfg.secret_source)
    log.info("AgentFlow API %s", cfg.describe())


def add_middleware(app: FastAPI, services) -> None:
    """Call before the CORS middleware is added, so CORS answers preflights first and adds
    its headers to our 429s."""
    app.add_middleware(AuditMiddleware, store=services.extra["audit"])
    limits = app.state.api_limits
    if limits is not None and limits.ip_rpm > 0:
        app.add_middleware(RateLimitMiddleware, limits=limits, auth_mode=app.state.auth.mode)


def document(app: FastAPI) -> None:
    """Add bearer auth to the OpenAPI document: the scheme, each operation's security
    requirement (none for public routes) and its 401/403/429 answers."""
    from .roles import effective_rule

    inner = app.openapi

    def openapi():
        doc = inner()
        if doc.get("x-agentflow-auth"):
            return doc
        doc["x-agentflow-auth"] = "bearer JWT; see SECURITY.md"
        components = doc.setdefault("components", {})
        components.setdefault("securitySchemes", {})["bearerAuth"] = {
            "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
            "description": "`agentflow token create --tenant T --role R` issues one."}
        error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}}
        for path, item in doc.get("paths", {}).items():
            for method, operation in item.items():
                if not isinstance(operation, dict) or "responses" not in operation:
                    continue
                rule = effective_rule(method.upper(), path)
                if rule.public:
                    operation["security"] = []
                    continue
                operation["security"] = [{"bearerAuth": []}]
                responses = operation["responses"]
                responses.setdefault("401", {"description": "no token, or an invalid or expired one", **error})
                if rule.role != "viewer":
                    responses.setdefault("403", {"description": f"the token's role is below {rule.role}", **error})
                responses.setdefault("429", {"description": "too many requests (see Retry-After)", **error})
        return doc

    app.openapi = openapi  # type: ignore[method-assign]
