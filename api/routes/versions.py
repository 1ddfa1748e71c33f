"""Workflow versions: what changed between two, and rollback to an earlier one."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path

from ...graph.diff import diff_specs
from ...graph.spec import WorkflowSpec
from ...graph.validate import validate
from ..body import JSONRoute
from ..deps import PrincipalDep, ServicesDep, TenantDep, save_workflow
from ..errors import ApiError, not_found
from ..schemas import ErrorResponse, RollbackRequest, SpecDiff, WorkflowRecord

router = APIRouter(tags=["workflows"], route_class=JSONRoute)

ERRORS = {404: {"model": ErrorResponse}, 422: {"model": ErrorResponse}}
VersionNumber = Annotated[int, Path(ge=1, le=2**31 - 1)]


def _version_spec(svc, tenant: str, workflow_id: str, number: int) -> dict[str, Any]:
    record = svc.workflows.version(tenant, workflow_id, number)
    if record is None:
        if not svc.workflows.exists(tenant, workflow_id):
            raise not_found("workflow", workflow_id)
        raise ApiError(404, f"workflow {workflow_id!r} has no version {number}")
    return record["spec"]


@router.get("/workflows/{workflow_id}/versions/{a}/diff/{b}", response_model=SpecDiff, responses=ERRORS,
            summary="What changed from version a to version b")
def diff_versions(workflow_id: str, a: VersionNumber, b: VersionNumber, svc: ServicesDep,
                  tenant: TenantDep) -> dict[str, Any]:
    old = _version_spec(svc, tenant, workflow_id, a)
    new = _version_spec(svc, tenant, workflow_id, b)
    return {"from": a, "to": b, **diff_specs(old, new)}


@router.post("/workflows/{workflow_id}/rollback", response_model=WorkflowRecord, responses=ERRORS,
             summary="Save an earlier version's spec as a new version (history is kept)")
def rollback(workflow_id: str, body: RollbackRequest, svc: ServicesDep, tenant: TenantDep,
             principal: PrincipalDep) -> dict[str, Any]:
    spec = _version_spec(svc, tenant, workflow_id, body.version)
    problems = validate(spec)
    if problems:  # saved under older rules that have since become stricter
        errors = [p.as_dict() for p in problems]
        raise ApiError(422, f"version {body.version} is no longer a valid spec", errors)
    return save_workflow(svc, tenant, principal, WorkflowSpec.model_validate(spec))
