"""Outbound webhooks: a signed POST to a URL when a run ends (see runs/webhooks.py)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Response

from ...graph.errors import BlockedAddressError, ProviderError
from ...graph.sources.http import check_host
from ...runs.webhooks import DeliveryConfig
from ...store.hooks import HookStore
from ..body import JSONRoute
from ..deps import ServicesDep, TenantDep
from ..errors import ApiError, not_found
from ..schemas import DeliveryList, ErrorResponse, WebhookCreate, WebhookList, WebhookRecord
from .hooks import allowed_key_env

router = APIRouter(tags=["webhooks"], route_class=JSONRoute)

ERRORS = {404: {"model": ErrorResponse}, 422: {"model": ErrorResponse}}


def _public(webhook: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in webhook.items() if k != "tenant_id"}


def _check_target(url: str) -> None:
    """Refuse a private target up front (deliveries check again at connect time)."""
    if DeliveryConfig.from_env().allow_private:
        return
    parts = urlsplit(url)
    if not parts.hostname:
        raise ApiError(422, "url has no host", [{"path": "url", "message": "no host"}])
    try:
        parts.hostname.encode("idna")
    except UnicodeError:
        raise ApiError(422, "url host is not a valid host name",
                       [{"path": "url", "message": "not a valid host name"}]) from None
    try:
        check_host(parts.hostname, parts.port)
    except BlockedAddressError as exc:
        message = f"{exc}".replace("set allow_private on the source to allow it",
                                   "set AGENTFLOW_WEBHOOKS_ALLOW_PRIVATE=1 on the server to allow it")
        raise ApiError(422, message, [{"path": "url", "message": message}]) from None
    except ProviderError:  # does not resolve now; deliveries will say so
        pass


@router.post("/webhooks", status_code=201, response_model=WebhookRecord, responses=ERRORS,
             summary="Notify a URL when runs end")
def create_webhook(body: WebhookCreate, svc: ServicesDep, tenant: TenantDep) -> dict[str, Any]:
    if body.secret_env:
        allowed_key_env(body.secret_env)
    _check_target(body.url)
    events = list(dict.fromkeys(body.events))
    return _public(HookStore(svc.factory).create_webhook(tenant, body.url, events, body.workflow_id,
                                                         body.secret_env))


@router.get("/webhooks", response_model=WebhookList, responses=ERRORS, summary="Outbound webhooks")
def list_webhooks(svc: ServicesDep, tenant: TenantDep) -> dict[str, Any]:
    return {"items": [_public(w) for w in HookStore(svc.factory).webhooks(tenant)]}


@router.get("/webhooks/{webhook_id}", response_model=WebhookRecord, responses=ERRORS, summary="One webhook")
def get_webhook(webhook_id: str, svc: ServicesDep, tenant: TenantDep) -> dict[str, Any]:
    webhook = HookStore(svc.factory).webhook(webhook_id, tenant)
    if webhook is None:
        raise not_found("webhook", webhook_id)
    return _public(webhook)


@router.delete("/webhooks/{webhook_id}", status_code=204, response_class=Response, responses=ERRORS,
               summary="Delete a webhook and its delivery log")
def delete_webhook(webhook_id: str, svc: ServicesDep, tenant: TenantDep) -> Response:
    if not HookStore(svc.factory).delete_webhook(tenant, webhook_id):
        raise not_found("webhook", webhook_id)
    return Response(status_code=204)


@router.get("/webhooks/{webhook_id}/deliveries", response_model=DeliveryList, responses=ERRORS,
            summary="Delivery attempts, newest first (the last 200)")
def list_deliveries(webhook_id: str, svc: ServicesDep, tenant: TenantDep) -> dict[str, Any]:
    store = HookStore(svc.factory)
    if store.webhook(webhook_id, tenant) is None:
        raise not_found("webhook", webhook_id)
    return {"items": store.deliveries(webhook_id)}
