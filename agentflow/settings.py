"""Settings from the environment (contract section 2), read in one place."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
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
    studio_dir: Path | None = Field(None, alias="AGENTFLOW_STUDIO_DIR")

    @property
    def distributed(self) -> bool:
        return bool(self.redis_url)

    @property
    def db_url(self) -> str:
        if self.database_url:
            return self.database_url
        self.home.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{self.home / 'agentflow.db'}"


@lru_cache
def get_settings() -> Settings:
    return Settings()
