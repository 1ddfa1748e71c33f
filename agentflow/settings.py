"""Settings from the environment (contract section 2), read in one place."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Mapping

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", extra="ignore")

    database_url: str | None = Field(None, alias="DATABASE_URL")
    redis_url: str | None = Field(None, alias="REDIS_URL")
    # Redis through Sentinel (contract section 10): these replace REDIS_URL for every use
    redis_sentinels: str | None = Field(None, alias="REDIS_SENTINELS")          # host:port,host:port
    redis_sentinel_master: str | None = Field(None, alias="REDIS_SENTINEL_MASTER")
    redis_db: int = Field(0, alias="REDIS_DB")                                  # with Sentinel
    redis_password: str | None = Field(None, alias="REDIS_PASSWORD")            # with Sentinel
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

    # `pgbouncer`: DATABASE_URL reaches Postgres through a pooler in transaction mode, so no
    # server-side prepared statements (a statement prepared on one server connection is
    # unknown on the next). Session state (session advisory locks) is never relied on.
    db_pooler: str | None = Field(None, alias="AGENTFLOW_DB_POOLER")
    # Behind a reverse proxy (deploy/nginx): trust X-Forwarded-For / X-Forwarded-Proto from
    # these addresses (comma-separated IPs or CIDRs; "*" = any). Empty: headers ignored.
    trusted_proxies: str = Field("", alias="AGENTFLOW_TRUSTED_PROXIES")

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
    def transaction_pooler(self) -> bool:
        pooler = (self.db_pooler or "").strip().lower()
        if pooler not in ("", "none", "pgbouncer"):
            raise ValueError(f"AGENTFLOW_DB_POOLER must be pgbouncer or unset, not {self.db_pooler!r}")
        return pooler == "pgbouncer"

    @property
    def redis(self) -> "RedisConfig | None":
        """Where Redis is (one URL, or Sentinel); None in embedded mode."""
        return RedisConfig.from_env({"REDIS_URL": self.redis_url, "REDIS_SENTINELS": self.redis_sentinels,
                                     "REDIS_SENTINEL_MASTER": self.redis_sentinel_master,
                                     "REDIS_DB": str(self.redis_db), "REDIS_PASSWORD": self.redis_password})

    @property
    def distributed(self) -> bool:
        return self.redis is not None

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
    def trusted_proxy_list(self) -> list[str]:
        return [p.strip() for p in self.trusted_proxies.split(",") if p.strip()]

    @property
    def db_url(self) -> str:
        if self.database_url:
            return self.database_url
        self.home.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{self.home / 'agentflow.db'}"


@dataclass(frozen=True)
class RedisConfig:
    """One Redis (`url`) or a master found through Sentinel (`sentinels`, `master`, `db`,
    `password`). Hashable: processes cache one client per config. Made into clients by
    `agentflow.redisconn` only."""

    url: str | None = None
    sentinels: tuple[tuple[str, int], ...] = ()
    master: str | None = None
    db: int = 0
    password: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str | None]) -> "RedisConfig | None":
        """From REDIS_SENTINELS + REDIS_SENTINEL_MASTER (+ REDIS_DB, REDIS_PASSWORD), else
        REDIS_URL; None when neither is set. Takes any mapping: the limiter factory and
        the worker launcher read the environment they are handed, not this process's."""
        sentinels = (env.get("REDIS_SENTINELS") or "").strip()
        if sentinels:
            master = (env.get("REDIS_SENTINEL_MASTER") or "").strip()
            if not master:
                raise ValueError("REDIS_SENTINELS is set but REDIS_SENTINEL_MASTER (the master's name) is not")
            hosts = []
            for item in sentinels.split(","):
                host, sep, port = item.strip().rpartition(":")
                if not sep or not host or not port.isdigit():
                    raise ValueError(f"REDIS_SENTINELS wants host:port,host:port,... not {item.strip()!r}")
                hosts.append((host.strip("[]"), int(port)))
            return cls(sentinels=tuple(hosts), master=master, db=int(env.get("REDIS_DB") or 0),
                       password=env.get("REDIS_PASSWORD") or None)
        url = (env.get("REDIS_URL") or "").strip()
        return cls(url=url) if url else None

    def describe(self) -> str:
        """Where Redis is, without secrets (for errors and logs)."""
        if self.sentinels:
            hosts = ",".join(f"{h}:{p}" for h, p in self.sentinels)
            return f"Sentinel master {self.master!r} (sentinels {hosts}, db {self.db})"
        from urllib.parse import urlsplit

        u = urlsplit(self.url or "")
        return f"{u.scheme}://{u.hostname}:{u.port or 6379}{u.path}"


@lru_cache
def get_settings() -> Settings:
    return Settings()
