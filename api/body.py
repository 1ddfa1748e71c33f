"""Strict JSON request bodies.

Every route uses `JSONRoute`, whose requests parse JSON strictly: NaN/Infinity and NUL
characters are rejected (PostgreSQL refuses them, so they would fail much later) and a
document nested deeper than the parser allows is a clean 422, never a crash. Routes
that take a whole workflow spec or source read the raw document with `JsonBody`, so the
validator can report every problem with its path.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Callable

from fastapi import Depends, Request, Response
from fastapi.routing import APIRoute

from .errors import ApiError

MAX_DEPTH = 100  # far above any real spec; pydantic cannot serialize much deeper


def _too_deep(value: Any, limit: int = MAX_DEPTH) -> bool:
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def _has_nul(value: Any) -> bool:
    """Does any string (or key) hold U+0000? PostgreSQL text cannot store it, so such a
    document would fail at the database with a misleading 503 (found by tests/fuzz)."""
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            if "\x00" in node:
                return True
        elif isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return False


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def strict_loads(raw: bytes | str) -> Any:
    """json.loads that rejects NaN/Infinity and documents nested deeper than MAX_DEPTH."""
    text = raw.decode("utf-8") if isinstance(raw, (bytes, bytearray)) else raw
    try:
        value = json.loads(text, parse_constant=_no_constants)
    except RecursionError:
        value, deep = None, True
    except json.JSONDecodeError:
        raise
    except ValueError as exc:
        raise json.JSONDecodeError(str(exc), text, 0) from None
    else:
        deep = _too_deep(value)
    if deep:
        raise json.JSONDecodeError(f"document is nested deeper than {MAX_DEPTH} levels", text, 0)
    if "\\u0000" in text and _has_nul(value):  # (a raw NUL is already a JSON syntax error)
        raise json.JSONDecodeError("strings may not contain the NUL character (\\u0000)", text, 0)
    return value


class StrictJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            try:
                self._json = strict_loads(body)
            except UnicodeDecodeError as exc:
                raise json.JSONDecodeError("body is not UTF-8", "", exc.start) from None
        return self._json


_JSON_TYPE = (b"content-type", b"application/json")


def _as_json_scope(scope: dict) -> dict:
    """Every body of this API is JSON: `curl -d` (form content type) or a missing or
    text/plain content type is read as JSON too, instead of failing as 'not an object'."""
    headers = scope.get("headers") or []
    for name, value in headers:
        if name == b"content-type":
            if b"json" in value.lower():
                return scope
            break
    rest = [(n, v) for n, v in headers if n != b"content-type"]
    return {**scope, "headers": rest + [_JSON_TYPE]}


class JSONRoute(APIRoute):
    def get_route_handler(self) -> Callable:
        original = super().get_route_handler()

        async def handler(request: Request) -> Response:
            return await original(StrictJSONRequest(_as_json_scope(request.scope), request.receive))

        return handler


async def json_body(request: Request) -> Any:
    """The request body as parsed JSON (any document), or a 422 saying why it is not JSON."""
    if not isinstance(request, StrictJSONRequest):
        request = StrictJSONRequest(request.scope, request.receive)
    body = await request.body()
    if not body.strip():
        raise ApiError(422, "request body is empty: send a JSON document",
                       [{"path": "", "message": "body required"}])
    try:
        return await request.json()
    except json.JSONDecodeError as exc:
        where = f" (line {exc.lineno}, column {exc.colno})" if exc.doc else ""
        detail = f"malformed JSON body: {exc.msg}{where}"
        raise ApiError(422, detail, [{"path": "", "message": detail}]) from None


JsonBody = Annotated[Any, Depends(json_body)]


def documented_body(ref: str, description: str = "") -> dict[str, Any]:
    """openapi_extra for a route whose body is read with JsonBody."""
    return {"requestBody": {"required": True, "description": description,
                            "content": {"application/json": {"schema": {"$ref": ref}}}}}
