"""Redis clients from the settings: the one place that knows Redis may sit behind Sentinel.

Every Redis user (the limiter, leases, run events, the API dispatcher, Celery's broker and
result backend) gets its connection here, so `REDIS_SENTINELS` + `REDIS_SENTINEL_MASTER`
replace `REDIS_URL` everywhere at once (contract section 10).

With Sentinel, a client asks the sentinels for the master on each new connection; after a
failover its old connections fail once (ConnectionError, or READONLY from a demoted master,
which redis-py turns into a ConnectionError) and the next one reaches the promoted replica.
"""

from __future__ import annotations

from typing import Any

from .settings import RedisConfig, get_settings

# Sentinels answer "who is the master" in microseconds; one that is down must not stall
# discovery for the client's whole socket timeout.
SENTINEL_TIMEOUT = 1.0


def _config(config: RedisConfig | str | None) -> RedisConfig:
    if isinstance(config, str):
        return RedisConfig(url=config)
    config = config or get_settings().redis
    if config is None:
        raise RuntimeError("Redis is not configured: set REDIS_URL, or REDIS_SENTINELS and REDIS_SENTINEL_MASTER")
    return config


def _master_kwargs(config: RedisConfig, kwargs: dict[str, Any]) -> dict[str, Any]:
    kw = {"db": config.db, **kwargs}
    if config.password:
        kw.setdefault("password", config.password)
    return kw


def redis_client(config: RedisConfig | str | None = None, **kwargs: Any):
    """A `redis.Redis` on the configured Redis (default: the settings'); `kwargs` go to the
    connections (socket_timeout, decode_responses...)."""
    import redis

    config = _config(config)
    if not config.sentinels:
        return redis.Redis.from_url(config.url, **kwargs)
    from redis.sentinel import Sentinel

    sentinel = Sentinel(list(config.sentinels), sentinel_kwargs=_sentinel_kwargs())
    return sentinel.master_for(config.master, redis_class=redis.Redis, **_master_kwargs(config, kwargs))


def async_redis_client(config: RedisConfig | str | None = None, **kwargs: Any):
    """The asyncio variant: a `redis.asyncio.Redis` (create it inside the loop that uses it)."""
    import redis.asyncio as aredis

    config = _config(config)
    if not config.sentinels:
        return aredis.Redis.from_url(config.url, **kwargs)
    from redis.asyncio.sentinel import Sentinel

    sentinel = Sentinel(list(config.sentinels), sentinel_kwargs=_sentinel_kwargs())
    return sentinel.master_for(config.master, redis_class=aredis.Redis, **_master_kwargs(config, kwargs))


def _sentinel_kwargs() -> dict[str, Any]:
    return {"socket_timeout": SENTINEL_TIMEOUT, "socket_connect_timeout": SENTINEL_TIMEOUT}


def celery_url(config: RedisConfig | str | None = None) -> tuple[str, dict[str, Any]]:
    """(URL, transport options) for Celery's broker and its result backend alike:
    `redis://...`, or `sentinel://h1:p1/db;sentinel://h2:p2/db` with `master_name`."""
    config = _config(config)
    if not config.sentinels:
        return config.url or "", {}
    from urllib.parse import quote

    auth = f":{quote(config.password, safe='')}@" if config.password else ""
    hosts = [(f"[{h}]" if ":" in h else h, p) for h, p in config.sentinels]  # IPv6 in brackets
    url = ";".join(f"sentinel://{auth}{host}:{port}/{config.db}" for host, port in hosts)
    return url, {"master_name": config.master, "sentinel_kwargs": _sentinel_kwargs()}
