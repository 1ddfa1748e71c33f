"""A real `agentflow serve` with token auth for the collaboration tests, and tokens for it."""

from __future__ import annotations

import httpx
import pytest

from agentflow.api.auth import AuthConfig
from tests.features.conftest import free_port, serve_factory  # noqa: F401  (fixtures reused)

SECRET = "collab-test-secret-0123456789abcdef"


def token(tenant: str = "t1", role: str = "editor", subject: str = "alice") -> str:
    cfg = AuthConfig(mode="required", home=None, secret=SECRET)  # type: ignore[arg-type]
    return cfg.issue(tenant=tenant, role=role, ttl_seconds=3600, subject=subject)


def save(url: str, spec: dict, tok: str) -> dict:
    r = httpx.post(url + "/workflows", json=spec, headers={"Authorization": f"Bearer {tok}"}, timeout=10)
    assert r.status_code == 201, r.text
    return r.json()
