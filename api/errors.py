"""One error shape for every failure: `{"detail": "...", "errors": [{"path", "message"}]}`.

- request validation (bad body, query, malformed JSON) -> 422 with each problem's path;
- HTTPException (404, 405, 413 ...) -> its status with the same shape;
- a database that cannot be reached -> 503 "database unavailable: <reason>" (never 500);
- a stored value under an encryption key this server does not have -> 503 naming the key id
  (the operator's fix: configure that key; store/crypto.py);
- JSON nested too deeply for the parser -> 422;
- anything else -> 500 "internal error", logged with its traceback.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any, Iterable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException

from ..graph.secrets import redact
from ..store.crypto import KeyUnavailable

log = logging.getLogger("agentflow.api")

_LOC_SOURCES = {"body"}


class ApiError(HTTPException):
    """An HTTP error with a problem list and, optionally, extra top-level fields."""

    def __init__(self, status_code: int, detail: str, errors: Iterable[dict[str, str]] | None = None,
                 headers: dict[str, str] | None = None, **extra: Any):
        super().__init__(status_code=status_code, detail=detail, headers=headers)
        self.errors = list(errors or [])
        self.extra = extra


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int):
        super().__init__(status_code=413, detail=f"request body is larger than {limit} bytes")


def not_found(what: str, ident: Any) -> ApiError:
    return ApiError(404, f"{what} {ident!r} not found")


def error_body(detail: str, errors: Iterable[dict[str, str]] = (), **extra: Any) -> dict[str, Any]:
    return {"detail": detail, "errors": list(errors), **extra}


def loc_path(loc: Iterable[Any], skip_tag: str | None = None) -> str:
    """("body", "nodes", 2, "source") -> "nodes[2].source"."""
    parts = list(loc)
    if parts and parts[0] in _LOC_SOURCES:
        parts = parts[1:]
    if skip_tag is not None and parts and parts[0] == skip_tag:
        parts = parts[1:]
    path = ""
    for part in parts:
        if isinstance(part, str) and (part.startswith("function-") or part.endswith("]") and "[" in part
                                      and not part.startswith("[")):
            continue  # validator wrappers and union member names, not user paths
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path


def _message(err: dict[str, Any]) -> str:
    kind = err.get("type")
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "missing":
        return "field required"
    msg = str(err.get("msg", "invalid value"))
    return msg.removeprefix("Value error, ")


def pydantic_problems(errors: Iterable[dict[str, Any]], skip_tag: str | None = None,
                      prefix: str = "") -> list[dict[str, str]]:
    out = []
    for err in errors:
        path = loc_path(err.get("loc", ()), skip_tag)
        if prefix:
            path = f"{prefix}.{path}" if path and not path.startswith("[") else f"{prefix}{path}"
        out.append({"path": path, "message": _message(err)})
    return out


def summarize(problems: list[dict[str, str]], limit: int = 3) -> str:
    head = "; ".join(f"{p['path'] or '<body>'}: {p['message']}" for p in problems[:limit])
    more = f" (+{len(problems) - limit} more)" if len(problems) > limit else ""
    return head + more


_URL_CREDENTIALS = re.compile(r"(\w[\w+.-]*://[^:/@\s]*):[^@\s]*@")
_KEYWORD_SECRET = re.compile(r"(password|passwd|pwd)\s*=\s*('[^']*'|\"[^\"]*\"|\S+)", re.I)


def scrub(text: str) -> str:
    text = _URL_CREDENTIALS.sub(r"\1:***@", text)
    text = _KEYWORD_SECRET.sub(r"\1=***", text)
    return redact(text)


def db_reason(exc: BaseException) -> str:
    """A short, password-free reason for a database failure."""
    orig = getattr(exc, "orig", None) or exc
    lines = [ln.strip() for ln in str(orig).strip().splitlines() if ln.strip()]
    text = lines[0] if lines else type(orig).__name__
    if text.startswith("(") and ")" in text:  # "(sqlite3.OperationalError) no such table: x"
        text = text.split(")", 1)[1].strip() or text
    return scrub(text)[:200]


# ---------------------------------------------------------------- handlers


async def _validation_handler(request: Request, exc: RequestValidationError) -> JSONResponse:
    errs = list(exc.errors())
    bad_json = next((e for e in errs if e.get("type") == "json_invalid"), None)
    if bad_json is not None:
        reason = (bad_json.get("ctx") or {}).get("error") or bad_json.get("msg")
        loc = bad_json.get("loc") or ()
        where = f" at position {loc[-1]}" if loc and isinstance(loc[-1], int) else ""
        detail = f"malformed JSON body: {reason}{where}"
        return JSONResponse(error_body(detail, [{"path": "", "message": detail}]), status_code=422)
    problems = pydantic_problems(errs)
    return JSONResponse(error_body(f"invalid request: {summarize(problems)}", problems), status_code=422)


async def _pydantic_handler(request: Request, exc: ValidationError) -> JSONResponse:
    # A pydantic model validated inside a route (not by FastAPI) that was not caught.
    problems = pydantic_problems(exc.errors(include_url=False))
    return JSONResponse(error_body(f"invalid request: {summarize(problems)}", problems), status_code=422)


def _leaf_routes(routes, prefix: str = ""):
    """(prefix, route) for every plain route, looking into included routers (FastAPI
    keeps `include_router` results as wrappers around the original router)."""
    from starlette.routing import Mount

    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            context = getattr(route, "include_context", None)
            yield from _leaf_routes(inner.routes, prefix + (getattr(context, "prefix", "") or ""))
        elif not isinstance(route, Mount) and getattr(route, "methods", None):
            yield prefix, route


def allowed_methods(request: Request) -> list[str]:
    """Every method the API routes accept at this path (Starlette lists only the first
    route's, and /workflows has a GET route and a POST route)."""
    path = request.scope.get("path", "")
    literal: set[str] = set()
    templated: set[str] = set()
    for prefix, route in _leaf_routes(getattr(request.app, "routes", ())):
        if prefix and not path.startswith(prefix):
            continue
        regex = getattr(route, "path_regex", None)
        if regex is not None and regex.match(path[len(prefix):]):
            (templated if "{" in getattr(route, "path", "") else literal).update(route.methods)
    # /workflows/execute is its own resource, not /workflows/{workflow_id} with id "execute"
    return sorted(literal or templated)


async def _http_handler(request: Request, exc: HTTPException) -> JSONResponse:
    if isinstance(exc, ApiError):
        body = error_body(str(exc.detail), exc.errors, **exc.extra)
    else:
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        body = error_body(detail)
    headers = dict(getattr(exc, "headers", None) or {})
    if exc.status_code == 405:
        methods = allowed_methods(request)
        if methods:
            headers["Allow"] = ", ".join(methods)
    return JSONResponse(body, status_code=exc.status_code, headers=headers or None)


async def _db_handler(request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, sa_exc.IntegrityError):
        log.warning("conflicting write on %s %s: %s", request.method, request.url.path, db_reason(exc))
        return JSONResponse(error_body("conflicting concurrent write; retry the request"), status_code=409)
    if isinstance(exc, sa_exc.DataError):
        # a value the database cannot take (e.g. a NUL character in a path parameter):
        # the request's fault, not a database outage (found by tests/fuzz)
        reason = db_reason(exc)
        log.warning("value refused by the database on %s %s: %s", request.method, request.url.path, reason)
        return JSONResponse(error_body(f"invalid value: {reason}", [{"path": "", "message": reason}]),
                            status_code=422)
    reason = db_reason(exc)
    log.error("database unavailable on %s %s: %s", request.method, request.url.path, reason)
    return JSONResponse(error_body(f"database unavailable: {reason}"), status_code=503,
                        headers={"Retry-After": "5"})


async def _connection_handler(request: Request, exc: Exception) -> JSONResponse:
    reason = scrub(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)[:200]
    log.error("backend unavailable on %s %s: %s", request.method, request.url.path, reason)
    return JSONResponse(error_body(f"service unavailable: {reason}"), status_code=503,
                        headers={"Retry-After": "5"})


async def _key_handler(request: Request, exc: KeyUnavailable) -> JSONResponse:
    log.error("%s %s: %s", request.method, request.url.path, exc)
    return JSONResponse(error_body(str(exc), [{"path": "", "message": f"encryption key {exc.kid}: {exc.reason}"}]),
                        status_code=503)


async def _recursion_handler(request: Request, exc: RecursionError) -> JSONResponse:
    return JSONResponse(error_body("request is nested too deeply",
                                   [{"path": "", "message": "JSON nested too deeply"}]), status_code=422)


async def _internal_handler(request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse(error_body("internal error"), status_code=500)


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation_handler)
    app.add_exception_handler(ValidationError, _pydantic_handler)
    app.add_exception_handler(HTTPException, _http_handler)
    app.add_exception_handler(sa_exc.DBAPIError, _db_handler)
    app.add_exception_handler(sa_exc.TimeoutError, _db_handler)  # connection pool exhausted
    try:
        import psycopg

        app.add_exception_handler(psycopg.OperationalError, _db_handler)
    except ImportError:  # pragma: no cover - psycopg is a dependency
        pass
    app.add_exception_handler(ConnectionError, _connection_handler)
    for module, names in (("redis.exceptions", ("ConnectionError", "TimeoutError")),
                          ("kombu.exceptions", ("OperationalError",))):
        # Broker errors in distributed mode: the broker is down, not our bug. Only
        # modules already loaded (by the dispatcher) can raise them.
        mod = sys.modules.get(module)
        if mod is None:
            continue
        for name in names:
            app.add_exception_handler(getattr(mod, name), _connection_handler)
    app.add_exception_handler(KeyUnavailable, _key_handler)
    app.add_exception_handler(RecursionError, _recursion_handler)
    app.add_exception_handler(Exception, _internal_handler)
