"""workers/lease.py on the real Redis: redis-py's Lock with the owner's heartbeat.
(A vanished lease taken back, a stolen one noticed: tests/chaos/test_regressions.py.)"""

from __future__ import annotations

import threading
import time
import uuid

import pytest
import redis

from agentflow.workers.lease import Lease

pytestmark = pytest.mark.redis


@pytest.fixture
def client():
    c = redis.Redis(host="127.0.0.1", db=14, socket_connect_timeout=2)
    c.ping()  # no Redis: the test fails here, it does not skip
    yield c
    c.close()


@pytest.fixture
def key(client):
    k = f"af:test-lease:{uuid.uuid4().hex}"
    yield k
    client.delete(k)


def test_one_owner_at_a_time_and_release_frees_it(client, key):
    first, second = Lease(client, key, ttl=5), Lease(client, key, ttl=5)
    assert first.acquire()
    assert client.get(key) == first.token.encode() and 0 < client.ttl(key) <= 5
    assert not second.acquire(), "a duplicate delivery must not get the lease"
    second.release()                       # not its lease: the owner keeps it
    assert client.get(key) == first.token.encode()
    first.release()
    assert client.get(key) is None
    with Lease(client, key, ttl=5) as third:
        assert third.acquire()
    assert client.get(key) is None, "the context manager released it"


def test_the_owner_renews_it_past_its_ttl_and_a_dead_owner_lets_it_expire(client, key):
    beats = []
    lease = Lease(client, key, ttl=1, on_renew=lambda: beats.append(time.monotonic()))
    assert lease.acquire()
    time.sleep(2.5)                         # 2.5 ttls: alive only because it was renewed
    assert client.get(key) == lease.token.encode() and len(beats) >= 5 and not lease.lost
    lease._stop.set()                       # the owner "dies": no more renewals, no release
    time.sleep(1.6)
    assert client.get(key) is None, "a dead owner's lease expires after its ttl"
    assert Lease(client, key, ttl=1).acquire()


def test_a_lease_is_renewed_from_its_own_thread_whoever_acquired_it(client, key):
    """The renewing thread must see the token the owner's thread set (Lock thread_local=False)."""
    lease = Lease(client, key, ttl=1)
    done = threading.Event()
    threading.Thread(target=lambda: (lease.acquire(), done.set())).start()
    assert done.wait(5)
    time.sleep(1.8)
    assert client.get(key) == lease.token.encode() and not lease.lost
    lease.release()                         # from another thread than the one that took it
    assert client.get(key) is None


def test_a_driver_takes_the_lease_and_clears_the_news_or_leaves_news_for_the_holder(client, key):
    from agentflow.workers.lease import KEPT, LOST, RELEASED

    news = key + ":news"
    client.set(news, "1")
    first = Lease(client, key, ttl=1)
    assert first.acquire_or_flag(news, 60)
    assert client.get(key) == first.token.encode() and not client.exists(news), "taken, and the news is consumed"
    time.sleep(1.8)                          # renewed by redis-py's Lock with the token set by the script
    assert client.get(key) == first.token.encode() and not first.lost
    second = Lease(client, key, ttl=1)
    assert not second.acquire_or_flag(news, 60)
    assert client.get(news) == b"1" and 0 < client.ttl(news) <= 60, "a busy run gets news for its holder"
    assert first.release_unless(news) == KEPT, "news came while it advanced: the holder goes on"
    assert client.get(key) == first.token.encode() and not client.exists(news)
    assert first.release_unless(news) == RELEASED
    assert client.get(key) is None
    third = Lease(client, key, ttl=5)
    assert third.acquire_or_flag(news, 60)
    client.set(key, "someone-else")          # its lease expired and another driver took the run
    client.set(news, "1")
    assert third.release_unless(news) == LOST
    assert client.get(key) == b"someone-else" and client.get(news) == b"1", "neither the lease nor the news is touched"
    client.delete(news)


def test_a_wake_sends_a_driver_only_when_no_driver_holds_the_run():
    from agentflow.workers import keys
    from agentflow.workers.app import RUN_QUEUE, make_celery
    from agentflow.workers.wake import wake
    from tests.distributed.conftest import claim_redis_db, release_redis_db

    db = claim_redis_db()  # a db of its own: the driver message lands on its `runs` queue
    client = redis.Redis(host="127.0.0.1", db=db)
    try:
        app = make_celery(f"redis://127.0.0.1:6379/{db}")
        run_id = uuid.uuid4().hex
        held = Lease(client, keys.run_lock(run_id), ttl=5)
        assert held.acquire()
        assert wake(client, app, run_id) is False
        assert client.get(keys.run_news(run_id)) == b"1" and client.llen(RUN_QUEUE) == 0, "the holder sees the news"
        held.release()
        assert wake(client, app, run_id) is True
        assert client.llen(RUN_QUEUE) == 1, "no holder: one driver message"
    finally:
        client.flushdb()
        release_redis_db(db)
