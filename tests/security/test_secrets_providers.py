"""Secrets providers (graph/secrets.py, docs/secrets.md): a spec names its secrets; the
server reads them from the environment (default), from files (Kubernetes/Docker secrets),
or from a provider of its own. A file-provided key reaches the provider, a missing file is
a step error naming the secret but no value, and the value is redacted everywhere."""

from __future__ import annotations

import json

import httpx
import pytest

from agentflow.graph import secrets
from tests.security.test_secrets_canary import Exchanges, canary_value, database_text, llm_spec, wait_ended
from tests.servers.agentflow_serve import AgentflowServe, server_env
from tests.servers.openai_server import OpenAIServer


def _reset() -> None:
    """Settings and the provider are built once a process; these tests change them."""
    from agentflow.settings import get_settings

    get_settings.cache_clear()
    secrets._configured.cache_clear()


@pytest.fixture
def provider_env(monkeypatch):
    """A monkeypatch whose setenv is seen by the next secrets.read_secret."""
    class Env:
        def setenv(self, name: str, value: str) -> None:
            monkeypatch.setenv(name, value)
            _reset()

    _reset()
    yield Env()
    monkeypatch.undo()
    _reset()


class DictProvider:
    """A provider of one's own, as `AGENTFLOW_SECRETS_PROVIDER=module:factory` loads it."""

    def get(self, name: str) -> str | None:
        return {"VAULT_ONLY_KEY": "from-the-dict-provider"}.get(name)


def test_file_provider_reads_one_file_per_name(tmp_path, provider_env):
    (tmp_path / "SHOP_TOKEN").write_text("tok-from-a-file-0001\n")   # `echo` leaves a newline
    (tmp_path / "EMPTY").write_text("")
    provider_env.setenv("AGENTFLOW_SECRETS_PROVIDER", "file")
    provider_env.setenv("AGENTFLOW_SECRETS_DIR", str(tmp_path))
    provider_env.setenv("SHOP_TOKEN", "from-the-environment")   # not read: the provider is `file`
    assert secrets.read_secret("SHOP_TOKEN") == "tok-from-a-file-0001"
    assert secrets.redact("x tok-from-a-file-0001 y") == "x *** y"     # remembered for redaction
    with pytest.raises(secrets.MissingSecret, match=f"secret file {tmp_path}/EMPTY is not set"):
        secrets.read_secret("EMPTY")
    assert secrets.read_secret("ABSENT", required=False) is None
    for bad in ("../SHOP_TOKEN", "a/b", ".hidden"):
        with pytest.raises(secrets.SecretNotAllowed, match="cannot name a file"):
            secrets.read_secret(bad)
    with pytest.raises(secrets.SecretNotAllowed):        # the server's own credentials, whatever the provider
        secrets.read_secret("DATABASE_URL")


def test_providers_chain_and_plug_in(tmp_path, provider_env):
    (tmp_path / "SHOP_TOKEN").write_text("tok-from-a-file-0002")
    provider_env.setenv("AGENTFLOW_SECRETS_DIR", str(tmp_path))
    provider_env.setenv("AGENTFLOW_SECRETS_PROVIDER", "file,env")
    provider_env.setenv("SHOP_TOKEN", "from-the-environment")
    provider_env.setenv("ONLY_IN_ENV", "env-value-0002")
    assert secrets.read_secret("SHOP_TOKEN") == "tok-from-a-file-0002"
    assert secrets.read_secret("ONLY_IN_ENV") == "env-value-0002"
    with pytest.raises(secrets.MissingSecret, match="secret file .*/NOWHERE or environment variable NOWHERE"):
        secrets.read_secret("NOWHERE")

    provider_env.setenv("AGENTFLOW_SECRETS_PROVIDER", f"{__name__}:DictProvider")
    assert secrets.read_secret("VAULT_ONLY_KEY") == "from-the-dict-provider"
    with pytest.raises(secrets.MissingSecret, match="secret NOWHERE \\(DictProvider\\) is not set"):
        secrets.read_secret("NOWHERE")

    provider_env.setenv("AGENTFLOW_SECRETS_PROVIDER", "vault")
    with pytest.raises(ValueError, match="unknown provider 'vault'"):
        secrets.read_secret("SHOP_TOKEN")


def test_a_run_reads_its_llm_key_from_a_secrets_file(tmp_path):
    """`agentflow serve` with AGENTFLOW_SECRETS_PROVIDER=file: the key and base URL the spec
    names are files (none is in the environment); the stand-in OpenAI server receives the
    file's key; a source naming a missing file fails its step naming the secret; the value
    never shows in the server's output, the API's answers or the database."""
    from agentflow.api.auth import issue_token
    from agentflow.settings import Settings

    canary = canary_value()
    home, secrets_dir = tmp_path / "home", tmp_path / "run-secrets"
    secrets_dir.mkdir()
    jwt_secret = "file-secrets-jwt-0123456789abcdef"
    exchanges = Exchanges()
    with OpenAIServer() as server:
        (secrets_dir / "OPENAI_API_KEY").write_text(canary + "\n")
        (secrets_dir / "OPENAI_BASE_URL").write_text(server.base_url)
        env = server_env(home, drop_prefixes=("OPENAI_",), AGENTFLOW_AUTH="required", AGENTFLOW_JWT_SECRET=jwt_secret,
                         AGENTFLOW_SECRETS_PROVIDER="file", AGENTFLOW_SECRETS_DIR=str(secrets_dir))
        with AgentflowServe(env, tmp_path / "serve.log", "--log-level", "debug", "--access-log") as served:
            with pytest.MonkeyPatch.context() as mp:
                mp.setenv("AGENTFLOW_JWT_SECRET", jwt_secret)
                mp.setenv("AGENTFLOW_HOME", str(home))
                token = issue_token("acme", "admin", 600, "file-secrets-test", settings=Settings())
            with httpx.Client(base_url=served.url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
                def call(method, url, **kw):
                    return exchanges.add(http.request(method, url, **kw))

                def run(spec: dict) -> dict:
                    assert call("POST", "/workflows", json=spec).status_code == 201
                    run_id = call("POST", f"/workflows/{spec['id']}/runs",
                                  json={"input": {"user_input": "hello"}}).json()["run_id"]
                    record = wait_ended(call, run_id)
                    call("GET", f"/runs/{run_id}/trace")
                    call("GET", f"/runs/{run_id}/events")
                    return record

                server.responder = lambda req: f"the key is {canary}"   # a provider that echoes it
                ok = run(llm_spec("from-file"))
                assert ok["status"] == "succeeded", ok
                assert ok["state"]["text_result"] == "the key is ***", ok["state"]
                assert [c.headers.get("authorization") for c in server.calls] == [f"Bearer {canary}"]

                missing = llm_spec("missing-file")
                missing["sources"][0]["api_key_env"] = "SUPPORT_LLM_KEY"
                failed = run(missing)
                assert failed["status"] == "failed", failed
                error = json.dumps(failed)
                assert f"needs the secret file {secrets_dir}/SUPPORT_LLM_KEY, which is not set" in error, error
                assert len(server.calls) == 1   # the step failed before calling anyone
    output = served.log()
    assert "GET /runs/" in output   # debug and access logs were on
    assert canary not in output, [line for line in output.splitlines() if canary in line][:5]
    assert canary not in exchanges.text() and "***" in exchanges.text()
    assert canary not in database_text(home / "agentflow.db")
