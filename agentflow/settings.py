"""Settings from the environment (contract section 2), read in one place."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", extra="ignore")

    database_url: str | None = Field(None, alias="DATABASE_URL")
    redis_url: str | None = Field(None, alias="REDIS_URL")
    home: Path = Field(Path.home() / ".agentflow", alias="AGENTFLOW_HOME")
    port: int = Field(8000, alias="AGENTFLOW_PORT")
    host: str = Field("127.0.0.1", alias="AGENTFLOW_HOST")
    max_body_bytes: int = Field(2_000_000, alias="AGENTFLOW_MAX_BODY_BYTES")
    embedded_workers: int = Field(4, alias="AGENTFLOW_EMBEDDED_WORKERS")
    # embedded mode: child runs of one workflow or map step run in parallel on at most this many threads
    child_run_workers: int = Field(8, ge=1, alias="AGENTFLOW_CHILD_RUN_WORKERS")
    # max_concurrency slots are leases: a step's slot is freed this many seconds after its
    # worker stopped renewing it (killed mid-step); a live step renews it every third of it
    concurrency_lease_s: float = Field(30.0, gt=0, alias="AGENTFLOW_CONCURRENCY_LEASE_S")
    studio_dir: Path | None = Field(None, alias="AGENTFLOW_STUDIO_DIR")
    # where `agentflow resume` (and other client commands) find the API, and with which token
    url: str | None = Field(None, alias="AGENTFLOW_URL")
    token: str | None = Field(None, alias="AGENTFLOW_TOKEN")

    # ---- security (api/auth.py, abuse.py; SECURITY.md)
    # required | local | off; unset: required in distributed mode, local in embedded mode
    auth: str | None = Field(None, alias="AGENTFLOW_AUTH")
    jwt_secret: str | None = Field(None, alias="AGENTFLOW_JWT_SECRET")          # HS256
    jwt_public_key: str | None = Field(None, alias="AGENTFLOW_JWT_PUBLIC_KEY")  # PEM, RS256/ES256
    jwks_url: str | None = Field(None, alias="AGENTFLOW_JWKS_URL")              # external identity provider
    jwt_issuer: str | None = Field(None, alias="AGENTFLOW_JWT_ISSUER")
    jwt_audience: str | None = Field(None, alias="AGENTFLOW_JWT_AUDIENCE")
    jwt_tenant_claim: str = Field("tenant", alias="AGENTFLOW_JWT_TENANT_CLAIM")
    jwt_role_claim: str = Field("role", alias="AGENTFLOW_JWT_ROLE_CLAIM")
    cors_origins: str = Field("", alias="AGENTFLOW_CORS_ORIGINS")  # comma-separated Studio origins
    # where the secrets specs name are read from (graph/secrets.py, docs/secrets.md):
    # env | file | package.module:factory | a comma-separated list tried in order
    secrets_provider: str = Field("env", alias="AGENTFLOW_SECRETS_PROVIDER")
    secrets_dir: Path = Field(Path("/run/secrets"), alias="AGENTFLOW_SECRETS_DIR")  # for `file`
    # API abuse limits (0 = off): requests a minute and burst, per tenant and per client IP
    rate_tenant_per_minute: float = Field(1200, alias="AGENTFLOW_RATE_TENANT_PER_MINUTE")
    rate_tenant_burst: int = Field(300, alias="AGENTFLOW_RATE_TENANT_BURST")
    rate_ip_per_minute: float = Field(600, alias="AGENTFLOW_RATE_IP_PER_MINUTE")
    rate_ip_burst: int = Field(200, alias="AGENTFLOW_RATE_IP_BURST")

    # ---- encryption at rest (store/crypto.py): base64 of 32 bytes; old keys only decrypt
    encryption_key: SecretStr | None = Field(None, alias="AGENTFLOW_ENCRYPTION_KEY")
    encryption_old_keys: SecretStr | None = Field(None, alias="AGENTFLOW_ENCRYPTION_OLD_KEYS")  # comma-separated
    # ---- collaborative editing (api/collab.py): a client whose message or whose edits would
    # take the shared document past these sizes is disconnected (close code 1009)
    collab_max_doc_bytes: int = Field(4_000_000, alias="AGENTFLOW_COLLAB_MAX_DOC_BYTES")
    collab_max_message_bytes: int = Field(1_000_000, alias="AGENTFLOW_COLLAB_MAX_MESSAGE_BYTES")
    # ---- integrations (contract section 8; docs/features.md)
    # executables an mcp source with transport stdio may start (comma-separated; "*" = any)
    mcp_stdio_commands: str = Field("", alias="AGENTFLOW_MCP_STDIO_COMMANDS")
    # how long an MCP tools/call of a workflow waits for the run before answering its run id
    mcp_call_wait_s: float = Field(30.0, alias="AGENTFLOW_MCP_CALL_WAIT_S")
    # OpenTelemetry: unset = off, and the SDK is never imported (runs/telemetry.py)
    otel_endpoint: str | None = Field(None, alias="OTEL_EXPORTER_OTLP_ENDPOINT")
    otel_traces_endpoint: str | None = Field(None, alias="OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    otel_service_name: str = Field("agentflow", alias="OTEL_SERVICE_NAME")

    @property
    def distributed(self) -> bool:
        return bool(self.redis_url)

    @property
    def auth_mode(self) -> str:
        mode = (self.auth or "").strip().lower()
        if not mode:
            return "required" if self.distributed else "local"
        if mode not in ("required", "local", "off"):
            raise ValueError(f"AGENTFLOW_AUTH must be required, local or off, not {self.auth!r}")
        return mode

    @property
    def cors_origin_list(self) -> list[str]:
        return [o.strip().rstrip("/") for o in self.cors_origins.split(",") if o.strip()]

    @property
    def db_url(self) -> str:
        if self.database_url:
            return self.database_url
        self.home.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{self.home / 'agentflow.db'}"


@lru_cache
def get_settings() -> Settings:
    return Settings()
