"""The scale-out settings on their own: where Redis is, the pooler, which proxies are trusted."""

from __future__ import annotations

import pytest

from agentflow.redisconn import celery_url, redis_client
from agentflow.settings import RedisConfig, Settings


def test_sentinels_replace_the_url_and_need_a_master_name():
    env = {"REDIS_URL": "redis://ignored:6379/0", "REDIS_SENTINELS": "10.0.0.1:26379, [::1]:26380",
           "REDIS_SENTINEL_MASTER": "mymaster", "REDIS_DB": "3", "REDIS_PASSWORD": "p@ss/word"}
    cfg = RedisConfig.from_env(env)
    assert cfg == RedisConfig(sentinels=(("10.0.0.1", 26379), ("::1", 26380)), master="mymaster", db=3,
                              password="p@ss/word")
    assert "p@ss" not in cfg.describe() and "mymaster" in cfg.describe()
    url, options = celery_url(cfg)
    assert url == "sentinel://:p%40ss%2Fword@10.0.0.1:26379/3;sentinel://:p%40ss%2Fword@[::1]:26380/3"
    assert options["master_name"] == "mymaster" and options["sentinel_kwargs"]["socket_timeout"] > 0
    client = redis_client(cfg)
    pool = client.connection_pool
    assert pool.service_name == "mymaster" and pool.connection_kwargs["db"] == 3

    with pytest.raises(ValueError, match="REDIS_SENTINEL_MASTER"):
        RedisConfig.from_env({"REDIS_SENTINELS": "h:26379"})
    with pytest.raises(ValueError, match="host:port"):
        RedisConfig.from_env({"REDIS_SENTINELS": "h", "REDIS_SENTINEL_MASTER": "m"})
    assert RedisConfig.from_env({"REDIS_URL": "redis://h:1/2"}) == RedisConfig(url="redis://h:1/2")
    assert RedisConfig.from_env({}) is None


def test_distributed_mode_follows_either_redis_setting():
    assert Settings(REDIS_URL=None, REDIS_SENTINELS=None).distributed is False
    assert Settings(REDIS_URL=None, REDIS_SENTINELS="h:1", REDIS_SENTINEL_MASTER="m").distributed is True
    assert Settings(REDIS_URL="redis://h:1/0", REDIS_SENTINELS=None).distributed is True


def test_pooler_setting_turns_prepared_statements_off():
    assert Settings(AGENTFLOW_DB_POOLER="pgbouncer").transaction_pooler is True
    assert Settings(AGENTFLOW_DB_POOLER=None).transaction_pooler is False
    with pytest.raises(ValueError, match="pgbouncer"):
        Settings(AGENTFLOW_DB_POOLER="odyssey").transaction_pooler


@pytest.mark.parametrize("trusted", ["", "*"])
def test_forwarded_for_names_the_client_only_from_a_trusted_proxy(tmp_path, trusted):
    """Per-IP limit of burst 2: three requests "from" 10.0.0.1, then one "from" 10.0.0.2.
    Trusted, the header separates the two clients; untrusted (the default), it is ignored
    and all four share the caller's own address."""
    from fastapi.testclient import TestClient

    from agentflow.api.main import create_app

    settings = Settings(AGENTFLOW_HOME=str(tmp_path), REDIS_URL=None, REDIS_SENTINELS=None, DATABASE_URL=None,
                        AGENTFLOW_AUTH="off", AGENTFLOW_RATE_IP_PER_MINUTE=1, AGENTFLOW_RATE_IP_BURST=2,
                        AGENTFLOW_TRUSTED_PROXIES=trusted)
    with TestClient(create_app(settings)) as client:
        first = [client.get("/workflows", headers={"X-Forwarded-For": "10.0.0.1"}).status_code for _ in range(3)]
        other = client.get("/workflows", headers={"X-Forwarded-For": "10.0.0.2"}).status_code
    assert first == [200, 200, 429]
    assert other == (200 if trusted else 429)
