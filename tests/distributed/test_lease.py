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
