"""Fixtures for the security tests: an embedded app with auth `required` (HS256), and tokens.

`secure_api(env)` builds one on a private AGENTFLOW_HOME; `Api.call(method, url, tenant,
role)` sends a request with a token of that tenant and role (role None: no token).
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from fastapi.testclient import TestClient

from tests.helpers import rules_spec

SECRET = "security-tests-jwt-secret-0123456789abcdef"
ROLES = ("viewer", "editor", "operator", "admin")
CLEARED = ("DATABASE_URL", "REDIS_URL", "AGENTFLOW_JWT_PUBLIC_KEY", "AGENTFLOW_JWKS_URL", "AGENTFLOW_JWT_ISSUER",
           "AGENTFLOW_JWT_AUDIENCE", "AGENTFLOW_CORS_ORIGINS", "AGENTFLOW_MAX_BODY_BYTES",
           "AGENTFLOW_SECRET_ENV_ALLOW", "AGENTFLOW_SECRET_ENV_DENY", "AGENTFLOW_RATE_TENANT_PER_MINUTE",
           "AGENTFLOW_RATE_TENANT_BURST", "AGENTFLOW_RATE_IP_PER_MINUTE", "AGENTFLOW_RATE_IP_BURST")


class Api:
    def __init__(self, client: TestClient, settings):
        self.client = client
        self.settings = settings
        self._tokens: dict[tuple, str] = {}

    @property
    def app(self):
        return self.client.app

    def token(self, tenant: str = "acme", role: str = "admin", subject: str | None = None, ttl: int = 3600) -> str:
        from agentflow.api.auth import issue_token

        key = (tenant, role, subject, ttl)
        if key not in self._tokens:
            self._tokens[key] = issue_token(tenant, role, ttl, subject or f"{role}@{tenant}", settings=self.settings)
        return self._tokens[key]

    def headers(self, tenant: str = "acme", role: str | None = "admin", **extra: str) -> dict[str, str]:
        out = dict(extra)
        if role is not None:
            out["Authorization"] = f"Bearer {self.token(tenant, role)}"
        return out

    def call(self, method: str, url: str, tenant: str = "acme", role: str | None = "admin",
             headers: dict | None = None, **kw: Any):
        return self.client.request(method, url, headers={**self.headers(tenant, role), **(headers or {})}, **kw)

    def wait_run(self, run_id: str, tenant: str = "acme", timeout: float = 20.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            record = self.call("GET", f"/runs/{run_id}", tenant).json()
            if record.get("status") in ("succeeded", "failed", "cancelled"):
                return record
            if time.monotonic() > deadline:
                raise AssertionError(f"run {run_id} still {record.get('status')} after {timeout}s")
            time.sleep(0.03)


@contextlib.contextmanager
def secure_api(home: Path, client_addr: tuple[str, int] | None = None, **env: str) -> Iterator[Api]:
    """An embedded app (auth required, HS256 with SECRET) on its own AGENTFLOW_HOME."""
    from agentflow.api.main import create_app
    from agentflow.settings import Settings

    with pytest.MonkeyPatch.context() as mp:
        for name in CLEARED:
            mp.delenv(name, raising=False)
        mp.setenv("AGENTFLOW_HOME", str(home))
        mp.setenv("AGENTFLOW_LOAD_EXAMPLES", "0")
        mp.setenv("AGENTFLOW_AUTH", "required")
        mp.setenv("AGENTFLOW_JWT_SECRET", SECRET)
        for key, value in env.items():
            if value is None:
                mp.delenv(key, raising=False)
            else:
                mp.setenv(key, value)
        settings = Settings()
        app = create_app(settings)
        kwargs = {"client": client_addr} if client_addr else {}
        with TestClient(app, **kwargs) as client:
            yield Api(client, settings)


@pytest.fixture
def make_api(tmp_path):
    """make_api(**env) -> a started Api; several may run side by side."""
    with contextlib.ExitStack() as stack:
        count = iter(range(1000))

        def make(client_addr=None, **env: str) -> Api:
            return stack.enter_context(secure_api(tmp_path / f"home{next(count)}", client_addr, **env))

        yield make


@pytest.fixture
def api(make_api) -> Api:
    return make_api()


def seed_tenant(api: Api, tenant: str, marker: str) -> dict[str, str]:
    """A workflow, a finished run, a source, a schedule, a hook and a webhook of `tenant`,
    each carrying `marker` in data that only its owner may see. Returns their ids."""
    def ok(response, *codes):
        assert response.status_code in codes, f"{response.request.method} {response.request.url}: {response.text}"
        return response.json() if response.content else None

    spec = rules_spec(id="wf", name=f"{marker} workflow", description=f"{marker} description")
    ok(api.call("POST", "/workflows", tenant, json=spec), 201)
    run_id = ok(api.call("POST", "/workflows/wf/runs", tenant,
                         json={"input": {"user_input": f"{marker} input", "metadata": {"tier": "paid"}}}), 202)["run_id"]
    api.wait_run(run_id, tenant)
    ok(api.call("POST", "/sources", tenant, json={"id": "src", "kind": "api",
                                                   "base_url": f"https://{marker.lower()}.example.com"}), 201)
    schedule = ok(api.call("POST", "/schedules", tenant, json={
        "workflow_id": "wf", "interval_seconds": 3600, "enabled": False,
        "input": {"user_input": f"{marker} scheduled"}}), 201)["id"]
    ids = {"workflow_id": "wf", "run_id": run_id, "source_id": "src", "schedule_id": schedule}
    hook = api.call("POST", "/hooks", tenant, json={"workflow_id": "wf", "secret_env": f"{marker}_HOOK_KEY"})
    if hook.status_code == 201:
        ids["hook_id"] = hook.json()["id"]
    webhook = api.call("POST", "/webhooks", tenant,  # a filter no run matches: nothing is ever sent
                       json={"url": f"https://93.184.216.34/{marker}", "workflow_id": "never-runs"})
    if webhook.status_code == 201:
        ids["webhook_id"] = webhook.json()["id"]
    return ids
