"""Workflows: validate, execute synchronously, save (versioned), list, fetch, replace, delete."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response

from ...graph.spec import WorkflowSpec
from ...graph.validate import Problem, validate
from .. import metrics
from ..body import JSONRoute, JsonBody, documented_body, json_body
from ..deps import PrincipalDep, ServicesDep, TenantDep, save_workflow
from ..errors import ApiError, not_found, summarize
from ..pagination import Cursor, Limit, decode_time_id, encode
from ..schemas import (SPEC_REF, ErrorResponse, ExecuteRequest, ExecuteResult, ValidationResult,
                       VersionList, VersionRecord, WorkflowPage, WorkflowRecord)

router = APIRouter(tags=["workflows"], route_class=JSONRoute)

ERRORS = {404: {"model": ErrorResponse}, 422: {"model": ErrorResponse}}
SPEC_BODY = documented_body(SPEC_REF, "A WorkflowSpec.")


def spec_problems(problems: list[Problem], **extra: Any) -> ApiError:
    errors = [p.as_dict() for p in problems]
    return ApiError(422, f"invalid workflow spec: {len(errors)} problem(s): {summarize(errors)}", errors, **extra)


def parse_spec(data: Any, extra_problems: list[Problem] | None = None, resolver=None) -> WorkflowSpec:
    """The validated spec, or a 422 listing every problem with its path. `resolver`: the
    tenant's saved workflows (WorkflowStore.resolver), which workflow and map nodes name."""
    problems = validate(data, resolver) + list(extra_problems or [])
    if problems:
        raise spec_problems(problems)
    return WorkflowSpec.model_validate(data)


async def _spec_document(request: Request) -> Any:
    """The body for /workflows/validate: its 422s say `valid: false` too."""
    try:
        return await json_body(request)
    except ApiError as exc:
        exc.extra.setdefault("valid", False)
        raise


@router.post("/workflows/validate", response_model=ValidationResult, response_model_exclude_none=True,
             summary="Validate a spec",
             responses={422: {"model": ValidationResult, "description": "the spec is invalid"}},
             openapi_extra=SPEC_BODY)
def validate_workflow(body: Annotated[Any, Depends(_spec_document)], svc: ServicesDep,
                      tenant: TenantDep) -> dict[str, Any]:
    problems = validate(body, svc.workflows.resolver(tenant))
    if problems:
        raise spec_problems(problems, valid=False)
    return {"valid": True, "errors": []}


@router.post("/workflows/execute", response_model=ExecuteResult, responses=ERRORS,
             summary="Run a spec synchronously and return its final state")
def execute_workflow(req: ExecuteRequest, svc: ServicesDep, tenant: TenantDep,
                     timeout: Annotated[float, Query(gt=0, le=3600, description=(
                         "Distributed mode: seconds to wait for the run to end."))] = 300) -> dict[str, Any]:
    spec = parse_spec(req.spec, resolver=svc.workflows.resolver(tenant))
    run_id = svc.runs.create(spec.to_json(), req.initial_state.model_dump(), workflow_id=spec.id,
                             tenant_id=tenant)
    metrics.RUNS_SUBMITTED.labels(svc.mode, "execute").inc()
    svc.dispatcher.execute(run_id, timeout)
    record = svc.runs.get(run_id, tenant) or {}
    metrics.RUNS_FINISHED_SEEN.labels(record.get("status", "unknown")).inc()
    return {"run_id": run_id, "status": record.get("status", "queued"), "state": record.get("state"),
            "error": record.get("error"), "steps": record.get("steps") or [],
            "tokens_used": record.get("tokens_used"), "cost": record.get("cost")}


@router.post("/workflows", status_code=201, response_model=WorkflowRecord, responses=ERRORS,
             summary="Save a workflow (a new version unless identical to the current one)",
             openapi_extra=SPEC_BODY)
def create_workflow(body: JsonBody, svc: ServicesDep, tenant: TenantDep, principal: PrincipalDep) -> dict[str, Any]:
    return save_workflow(svc, tenant, principal, parse_spec(body, resolver=svc.workflows.resolver(tenant)))


@router.get("/workflows", response_model=WorkflowPage, responses=ERRORS, summary="List workflows, newest first")
def list_workflows(svc: ServicesDep, tenant: TenantDep, limit: Limit = 50, cursor: Cursor = None,
                   q: Annotated[str | None, Query(max_length=200, description="Search id, name, description.")] = None,
                   ) -> dict[str, Any]:
    items, next_key = svc.workflows.list(tenant, limit=limit, after=decode_time_id(cursor), q=q or None)
    return {"items": items, "next_cursor": encode(*next_key) if next_key else None}


@router.get("/workflows/{workflow_id}", response_model=WorkflowRecord, responses=ERRORS)
def get_workflow(workflow_id: str, svc: ServicesDep, tenant: TenantDep) -> dict[str, Any]:
    record = svc.workflows.get(tenant, workflow_id)
    if record is None:
        raise not_found("workflow", workflow_id)
    return record


@router.put("/workflows/{workflow_id}", response_model=WorkflowRecord, openapi_extra=SPEC_BODY,
            responses={201: {"model": WorkflowRecord, "description": "created"}, **ERRORS},
            summary="Replace a workflow (saved as a new version; created when absent)")
def replace_workflow(workflow_id: str, body: JsonBody, svc: ServicesDep, tenant: TenantDep,
                     principal: PrincipalDep, response: Response) -> dict[str, Any]:
    mismatch = []
    if isinstance(body, dict) and isinstance(body.get("id"), str) and body["id"] != workflow_id:
        mismatch.append(Problem("id", f"must equal the workflow id in the path ({workflow_id!r})"))
    spec = parse_spec(body, mismatch, resolver=svc.workflows.resolver(tenant))
    existed = svc.workflows.exists(tenant, workflow_id)
    record = save_workflow(svc, tenant, principal, spec)
    response.status_code = 200 if existed else 201
    return record


@router.delete("/workflows/{workflow_id}", status_code=204, response_class=Response, responses=ERRORS,
               summary="Delete a workflow and its versions (its runs are kept)")
def delete_workflow(workflow_id: str, svc: ServicesDep, tenant: TenantDep) -> Response:
    if not svc.workflows.delete(tenant, workflow_id):
        raise not_found("workflow", workflow_id)
    return Response(status_code=204)


@router.get("/workflows/{workflow_id}/versions", response_model=VersionList, responses=ERRORS)
def list_versions(workflow_id: str, svc: ServicesDep, tenant: TenantDep) -> dict[str, Any]:
    items = svc.workflows.versions(tenant, workflow_id)
    if items is None:
        raise not_found("workflow", workflow_id)
    return {"items": items}


@router.get("/workflows/{workflow_id}/versions/{version}", response_model=VersionRecord, responses=ERRORS)
def get_version(workflow_id: str, version: Annotated[int, Path(ge=1, le=2**31 - 1)], svc: ServicesDep,
                tenant: TenantDep) -> dict[str, Any]:
    record = svc.workflows.version(tenant, workflow_id, version)
    if record is None:
        if not svc.workflows.exists(tenant, workflow_id):
            raise not_found("workflow", workflow_id)
        raise ApiError(404, f"workflow {workflow_id!r} has no version {version}")
    return record
