"""Who am I, and Studio's local token (local mode, this machine only)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any

import jwt
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from ..auth import Principal, auth_config, authorize, is_local_request
from ..body import JSONRoute
from ..errors import ApiError
from ..schemas import ErrorResponse

router = APIRouter(tags=["auth"], route_class=JSONRoute)


class Me(BaseModel):
    subject: str
    tenant: str
    role: str
    auth: str  # how the caller was recognized: token, local, off


class LocalToken(BaseModel):
    token: str
    subject: str
    tenant: str
    role: str
    expires_at: datetime | None = None


@router.get("/auth/me", response_model=Me, summary="The caller: subject, tenant and role",
            responses={401: {"model": ErrorResponse}})
def me(principal: Annotated[Principal, Depends(authorize)]) -> dict[str, Any]:
    return {"subject": principal.subject, "tenant": principal.tenant, "role": principal.role,
            "auth": principal.via}


@router.get("/auth/local-token", response_model=LocalToken,
            summary="The local admin token (local auth mode, requests from this machine only)",
            responses={403: {"model": ErrorResponse, "description": "not a request from this machine"},
                       404: {"model": ErrorResponse, "description": "the server is not in local auth mode"}})
def local_token(request: Request) -> JSONResponse:
    cfg = auth_config(request)
    if cfg.mode != "local":
        raise ApiError(404, f"no local token: the server runs with AGENTFLOW_AUTH={cfg.mode}")
    if not is_local_request(request):
        raise ApiError(403, "the local token is only handed to requests from this machine")
    token = cfg.local_token()
    exp = jwt.decode(token, options={"verify_signature": False}).get("exp")
    body = {"token": token, "subject": "local-admin", "tenant": "default", "role": "admin",
            "expires_at": datetime.fromtimestamp(exp, timezone.utc).isoformat() if exp else None}
    return JSONResponse(body, headers={"Cache-Control": "no-store"})
