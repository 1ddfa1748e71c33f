"""Inbound webhook triggers: a signed POST /hooks/{id} starts a run of the hook's workflow.

The trigger carries no API token: it is authenticated by an HMAC-SHA256 signature of
`"<timestamp>.<raw body>"` (headers X-AgentFlow-Timestamp, X-AgentFlow-Signature:
sha256=<hex>) keyed with the environment variable the hook names, and the timestamp must
be within 5 minutes of the server's clock. The hook id (random, 24+ characters) names
the tenant and workflow; the body becomes the run's input:

- `{"user_input": "...", "metadata": {...}}` (either key optional) is used as is;
- any other JSON document -> `{"user_input": "<the JSON text>", "metadata": {"webhook": <document>}}`.

A signed request starts at most one run: the replay guard is claimed atomically before the
run is started, and the same request again (or at the same moment) gets a 409.
"""

from __future__ import annotations

import json
import logging
from functools import partial
from typing import Any

import anyio
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from ...graph.secrets import MissingSecret, SecretNotAllowed, check_env_name, read_secret
from ...runs.webhooks import (REPLAY_TTL, SIGNATURE_HEADER, TIMESTAMP_HEADER, RedisReplayGuard, ReplayGuard,
                              check_signature, replay_key)
from ...store.hooks import HookReplays, HookStore
from .. import metrics
from ..auth import attribute
from ..body import JSONRoute, strict_loads
from ..deps import Services, ServicesDep, TenantDep
from ..errors import ApiError, not_found, scrub
from ..schemas import ErrorResponse, HookAccepted, HookCreate, HookList, HookRecord

log = logging.getLogger("agentflow.api")
router = APIRouter(tags=["webhooks"], route_class=JSONRoute)

ERRORS = {404: {"model": ErrorResponse}, 422: {"model": ErrorResponse}}


def _public(hook: dict[str, Any], request: Request) -> dict[str, Any]:
    out = {k: v for k, v in hook.items() if k != "tenant_id"}
    out["url"] = str(request.url_for("trigger_hook", hook_id=hook["id"]))
    return out


@router.post("/hooks", status_code=201, response_model=HookRecord, responses=ERRORS,
             summary="Create an inbound trigger for a workflow")
def create_hook(body: HookCreate, request: Request, svc: ServicesDep, tenant: TenantDep) -> dict[str, Any]:
    if not svc.workflows.exists(tenant, body.workflow_id):
        raise ApiError(422, f"workflow {body.workflow_id!r} not found",
                       [{"path": "workflow_id", "message": "no such workflow"}])
    allowed_key_env(body.secret_env)
    try:
        configured = read_secret(body.secret_env, required=False)
    except MissingSecret:
        configured = None
    if not configured:
        log.warning("hook for %s: secret %s is not set on this server; its triggers "
                    "will be refused until it is", body.workflow_id, body.secret_env)
    return _public(HookStore(svc.factory).create_hook(tenant, body.workflow_id, body.secret_env), request)


@router.get("/hooks", response_model=HookList, responses=ERRORS, summary="Inbound triggers")
def list_hooks(request: Request, svc: ServicesDep, tenant: TenantDep) -> dict[str, Any]:
    return {"items": [_public(h, request) for h in HookStore(svc.factory).hooks(tenant)]}


@router.get("/hooks/{hook_id}", response_model=HookRecord, responses=ERRORS, summary="One inbound trigger")
def get_hook(hook_id: str, request: Request, svc: ServicesDep, tenant: TenantDep) -> dict[str, Any]:
    hook = HookStore(svc.factory).hook(hook_id, tenant)
    if hook is None:
        raise not_found("hook", hook_id)
    return _public(hook, request)


@router.delete("/hooks/{hook_id}", status_code=204, response_class=Response, responses=ERRORS,
               summary="Delete an inbound trigger")
def delete_hook(hook_id: str, svc: ServicesDep, tenant: TenantDep) -> Response:
    if not HookStore(svc.factory).delete_hook(tenant, hook_id):
        raise not_found("hook", hook_id)
    return Response(status_code=204)


# ---------------------------------------------------------------- the trigger


def allowed_key_env(name: str, path: str = "secret_env") -> None:
    """A hook or webhook may not name one of the server's own credentials as its key."""
    try:
        check_env_name(name)
    except SecretNotAllowed as exc:
        raise ApiError(422, str(exc), [{"path": path, "message": str(exc)}]) from None


def hook_input(document: Any) -> dict[str, Any]:
    """The run input a trigger's body stands for (see the module doc)."""
    if isinstance(document, dict) and set(document) <= {"user_input", "metadata"} \
            and isinstance(document.get("user_input", ""), str) and isinstance(document.get("metadata", {}), dict):
        return {"user_input": document.get("user_input", ""), "metadata": dict(document.get("metadata") or {})}
    return {"user_input": json.dumps(document, ensure_ascii=False), "metadata": {"webhook": document}}


def _replay_guard(svc: Services) -> ReplayGuard:
    guard = svc.extra.get("hook_replay")
    if guard is None:
        redis = getattr(getattr(svc.dispatcher, "inner", None), "redis", None)
        guard = RedisReplayGuard(redis) if redis is not None else HookReplays(svc.factory, REPLAY_TTL)
        svc.extra["hook_replay"] = guard
    return guard


def _replayed(earlier: str) -> ApiError:
    problem = [{"path": f"header.{SIGNATURE_HEADER}", "message": "this signed request was already accepted"}]
    if earlier:
        return ApiError(409, f"this signed request was already accepted and started run {earlier}; "
                        "a new trigger needs a new signature (a new timestamp)", problem,
                        headers={"Location": f"/runs/{earlier}"}, run_id=earlier)
    return ApiError(409, "an identical signed request is being accepted right now; "
                    "a new trigger needs a new signature (a new timestamp)", problem, run_id=None)


def _unauthorized(reason: str) -> ApiError:
    return ApiError(401, f"invalid webhook signature: {reason}",
                    [{"path": f"header.{SIGNATURE_HEADER}", "message": reason}])


def _start(svc: Services, hook: dict[str, Any], run_input: dict[str, Any]) -> str:
    workflow = svc.workflows.get(hook["tenant_id"], hook["workflow_id"])
    if workflow is None:
        raise ApiError(404, f"the hook's workflow {hook['workflow_id']!r} no longer exists")
    run_id = svc.runs.create(workflow["spec"], run_input, workflow_id=hook["workflow_id"],
                             workflow_version=workflow["version"], tenant_id=hook["tenant_id"])
    try:
        svc.dispatcher.submit(run_id)
    except Exception as exc:
        reason = scrub(str(exc) or type(exc).__name__)[:200]
        svc.runs.finish(run_id, "failed", error=f"could not be queued: {reason}")
        raise ApiError(503, f"run could not be queued: {reason}", headers={"Retry-After": "5"}) from None
    return run_id


@router.post("/hooks/{hook_id}", name="trigger_hook", status_code=202, response_model=HookAccepted,
             openapi_extra={"security": []}, responses={
                 401: {"model": ErrorResponse, "description": "missing, stale or wrong signature"},
                 409: {"model": ErrorResponse, "description": "this signed request was already accepted"},
                 **ERRORS}, summary="Start a run (signed with the hook's key; no API token)")
async def trigger_hook(hook_id: str, request: Request, svc: ServicesDep) -> JSONResponse:
    raw = await request.body()
    hook = await anyio.to_thread.run_sync(partial(HookStore(svc.factory).hook, hook_id))
    if hook is None or not hook["enabled"]:
        raise not_found("hook", hook_id)
    try:
        key = read_secret(hook["secret_env"], required=False)
    except (SecretNotAllowed, MissingSecret):
        key = None
    if not key:
        log.warning("hook %s: secret %s is not set (or not allowed); refusing its trigger",
                    hook_id, hook["secret_env"])
        raise _unauthorized("the server cannot verify signatures for this hook (its key is not configured)")
    signature = request.headers.get(SIGNATURE_HEADER)
    reason = check_signature(key, request.headers.get(TIMESTAMP_HEADER), signature, raw)
    if reason is not None:
        raise _unauthorized(reason)
    document: Any = {}
    if raw.strip():
        try:
            document = strict_loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            detail = f"the body is not JSON: {exc}"
            raise ApiError(422, detail, [{"path": "", "message": detail}]) from None
    # claimed before the run starts, in one atomic step: two identical requests at once
    # cannot both get here (checking, starting, then remembering let both through)
    guard, key = _replay_guard(svc), replay_key(hook_id, signature or "")
    earlier = await anyio.to_thread.run_sync(guard.claim, key)
    if earlier is not None:
        raise _replayed(earlier)
    # audited (run.start_hook) as the hook of its tenant; a replay above starts and records nothing
    attribute(request, hook["tenant_id"], f"hook:{hook_id}")
    try:
        run_id = await anyio.to_thread.run_sync(_start, svc, hook, hook_input(document))
    except Exception:
        await anyio.to_thread.run_sync(guard.release, key)  # not accepted: the sender may retry it
        raise
    await anyio.to_thread.run_sync(guard.settle, key, run_id)
    metrics.RUNS_SUBMITTED.labels(svc.mode, "hook").inc()
    return JSONResponse({"run_id": run_id, "status": "queued"}, status_code=202,
                        headers={"Location": f"/runs/{run_id}"})
