"""The multiplexed asyncio Redis connection behind the API's limit checks (ratelimit/resp.py),
against the real Redis: replies reach the right caller, a dropped connection is replaced,
a silent server times out."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from agentflow.ratelimit.base import QueueLimits
from agentflow.ratelimit.redis import RedisLimiter
from agentflow.ratelimit.resp import MultiplexedConnection, _command
from tests.helpers import run_coroutine

pytestmark = pytest.mark.redis


def _conn(url: str, **kw) -> MultiplexedConnection:
    return MultiplexedConnection.from_kwargs({**redis.ConnectionPool.from_url(url).connection_kwargs, **kw})


def test_concurrent_callers_each_get_their_own_reply(redis_url):
    async def main():
        conn = _conn(redis_url)
        replies = await asyncio.gather(*(conn.execute([_command("ECHO", f"m{i}"), _command("ECHO", f"n{i}")])
                                         for i in range(300)))
        conn.close()
        return replies

    replies = run_coroutine(main)
    assert replies == [[f"m{i}".encode(), f"n{i}".encode()] for i in range(300)]


def test_it_selects_the_database_of_the_url(redis_url):
    key = f"af:test:resp:{uuid.uuid4().hex}"
    db5 = redis.Redis.from_url(redis_url.rsplit("/", 1)[0] + "/5")

    async def main():
        conn = _conn(redis_url.rsplit("/", 1)[0] + "/5")
        await conn.execute([_command("SET", key, "here")])
        conn.close()

    run_coroutine(main)
    try:
        assert db5.get(key) == b"here"
    finally:
        db5.delete(key)


def test_a_refused_password_is_a_clear_error(redis_url):
    async def main():
        conn = _conn(redis_url, password="not-the-password")
        await conn.execute([_command("PING")])

    with pytest.raises(ResponseError, match="AUTH|password"):
        run_coroutine(main)


def test_a_killed_connection_is_replaced(redis_url):
    admin = redis.Redis.from_url(redis_url)

    async def main():
        conn = _conn(redis_url)
        [first] = await conn.execute([_command("CLIENT", "ID")])
        admin.client_kill_filter(_id=first)
        await asyncio.sleep(0.05)  # the close reaches the loop
        [second] = await conn.execute([_command("CLIENT", "ID")])
        conn.close()
        return first, second

    first, second = run_coroutine(main)
    assert first != second


def test_a_silent_server_times_out_and_the_next_call_connects_again():
    async def main():
        accepted = []

        async def mute(reader, writer):  # reads, never answers
            accepted.append(writer)
            try:
                await reader.read(1 << 16)
                await asyncio.sleep(5)
            except asyncio.CancelledError:
                pass

        server = await asyncio.start_server(mute, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        conn = MultiplexedConnection("127.0.0.1", port, timeout=0.3)
        with pytest.raises(RedisTimeoutError, match="did not answer"):
            await conn.execute([_command("PING")])
        with pytest.raises(RedisTimeoutError):
            await conn.execute([_command("PING")])
        server.close()
        return len(accepted)

    assert run_coroutine(main) == 2  # a connection that timed out is not reused


def test_nothing_listening_is_a_connection_error():
    async def main():
        await MultiplexedConnection("127.0.0.1", 1, timeout=1).execute([_command("PING")])

    with pytest.raises(RedisConnectionError, match="cannot connect"):
        run_coroutine(main)


def test_limiter_checks_survive_a_dropped_connection_and_a_script_flush(redis_url, key_prefix):
    lim = RedisLimiter(redis_url, key_prefix=key_prefix)
    queues = [QueueLimits("api:a", max_requests_per_minute=60, burst_size=2),
              QueueLimits("api:b", max_requests_per_minute=60, burst_size=1)]

    async def main():
        first = await lim.try_acquire_each_async(queues)
        [cid] = await lim._async_connection().execute([_command("CLIENT", "ID")])
        lim.redis.client_kill_filter(_id=cid)
        lim.redis.script_flush()
        await asyncio.sleep(0.05)
        second = await lim.try_acquire_each_async(queues)
        return first, second

    first, second = run_coroutine(main)
    assert [d.allowed for d in first] == [True, True]
    assert [d.allowed for d in second] == [True, False]  # b's burst of 1 is spent; a has one left
    assert second[1].retry_after > 0
