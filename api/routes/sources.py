"""Reusable sources. A source names environment variables; it never carries a secret value."""

from __future__ import annotations

from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from fastapi import APIRouter, Query, Response
from pydantic import ValidationError

from ...graph.spec import Source
from ...store.sources import SourceExists
from ..body import JSONRoute, JsonBody, documented_body
from ..deps import ServicesDep, TenantDep
from ..errors import ApiError, not_found, pydantic_problems, summarize
from ..pagination import Cursor, Limit, decode_str, encode
from ..schemas import SOURCE_REF, ErrorResponse, SourceJson, SourcePage

router = APIRouter(tags=["sources"], route_class=JSONRoute)

ERRORS = {404: {"model": ErrorResponse}, 422: {"model": ErrorResponse}}
SOURCE_BODY = documented_body(SOURCE_REF, "A source: kind llm, image, db or api.")


def _invalid(problems: list[dict[str, str]]) -> ApiError:
    return ApiError(422, f"invalid source: {summarize(problems)}", problems)


def parse_source(data: Any, path_id: str | None = None):
    """The validated Source model, or a 422 listing every problem with its path."""
    if not isinstance(data, dict):
        raise _invalid([{"path": "", "message": "a source must be a JSON object"}])
    problems: list[dict[str, str]] = []
    if path_id is not None:
        if "id" in data and data["id"] != path_id:
            problems.append({"path": "id", "message": f"must equal the source id in the path ({path_id!r})"})
    try:
        # the concrete union of the installed kinds: strict mode reaches every field (JSON types: 0 is not false)
        source = Source.adapter().validate_python(data, strict=True)
    except ValidationError as exc:
        kind = data.get("kind") if isinstance(data.get("kind"), str) else None
        for err in exc.errors(include_url=False):
            if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
                kinds = ", ".join(repr(k) for k in Source.models())
                problems.append({"path": "kind", "message": f"kind must be one of {kinds}"})
            else:
                problems.extend(pydantic_problems([err], skip_tag=kind))
        raise _invalid(problems) from None
    base_url = getattr(source, "base_url", None)
    if base_url:
        try:
            parts = urlsplit(base_url)
            _ = parts.port  # raises on a malformed port
        except ValueError as exc:
            raise _invalid([{"path": "base_url", "message": f"not a valid URL: {exc}"}]) from None
        if parts.username or parts.password:
            problems.append({"path": "base_url", "message": (
                "credentials in base_url are not allowed: name an environment variable in auth_env")})
    if problems:
        raise _invalid(problems)
    return source


@router.get("/sources", response_model=SourcePage, responses=ERRORS, summary="List sources by id")
def list_sources(svc: ServicesDep, tenant: TenantDep, limit: Limit = 100, cursor: Cursor = None,
                 kind: Annotated[Literal["llm", "image", "db", "api"] | None, Query()] = None) -> dict[str, Any]:
    items, next_id = svc.sources.list(tenant, limit=limit, after=decode_str(cursor), kind=kind)
    return {"items": items, "next_cursor": encode(next_id) if next_id else None}


@router.post("/sources", status_code=201, response_model=SourceJson, openapi_extra=SOURCE_BODY,
             responses={**ERRORS, 409: {"model": ErrorResponse, "description": "the id is taken"}})
def create_source(body: JsonBody, svc: ServicesDep, tenant: TenantDep) -> dict[str, Any]:
    source = parse_source(body)
    try:
        return svc.sources.create(tenant, source)
    except SourceExists:
        raise ApiError(409, f"source {source.id!r} already exists: PUT /sources/{source.id} replaces it",
                       [{"path": "id", "message": "already exists"}]) from None


@router.get("/sources/{source_id}", response_model=SourceJson, responses=ERRORS)
def get_source(source_id: str, svc: ServicesDep, tenant: TenantDep) -> dict[str, Any]:
    source = svc.sources.get(tenant, source_id)
    if source is None:
        raise not_found("source", source_id)
    return source


@router.put("/sources/{source_id}", response_model=SourceJson, openapi_extra=SOURCE_BODY,
            responses={201: {"description": "created"}, **ERRORS},
            summary="Replace a source (created when absent)")
def replace_source(source_id: str, body: JsonBody, svc: ServicesDep, tenant: TenantDep,
                   response: Response) -> dict[str, Any]:
    source = parse_source(body, path_id=source_id)
    data, created = svc.sources.put(tenant, source)
    response.status_code = 201 if created else 200
    return data


@router.delete("/sources/{source_id}", status_code=204, response_class=Response, responses=ERRORS)
def delete_source(source_id: str, svc: ServicesDep, tenant: TenantDep) -> Response:
    if not svc.sources.delete(tenant, source_id):
        raise not_found("source", source_id)
    return Response(status_code=204)
