"""Claims on Redis dbs (conftest.claim_redis_db): a claim names its owner's host and pid, and
a claim whose owner died on this host (a SIGKILLed test run never releases) is taken over
at once instead of blocking its db for the claim's 3 hours. On the real Redis, under keys
of their own in db 0 (the dbs 1-14 of other test runs are not touched)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid

import pytest

from tests.distributed import conftest
from tests.distributed.conftest import CLAIM, CLAIM_TTL, HOST, claim_owner, take_claim
from tests.needs import need_redis


@pytest.fixture
def claim():
    """(db 0 client, a claim key of this test's own)."""
    r0 = need_redis("redis://127.0.0.1:6379/0")
    key = CLAIM.format(f"test-{uuid.uuid4().hex[:8]}")
    yield r0, key
    r0.delete(key)


@pytest.fixture
def dead_pid() -> int:
    """The pid of a process that ran here and ended (reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.fixture
def live_pid():
    """The pid of a sleeping child, alive while the test runs."""
    child = subprocess.Popen(["sleep", "120"])
    yield child.pid
    os.kill(child.pid, signal.SIGKILL)
    child.wait()


def test_a_claim_whose_owner_died_is_taken_over(claim, dead_pid):
    r0, key = claim
    r0.set(key, f"{HOST}:{dead_pid}", ex=CLAIM_TTL)
    assert take_claim(r0, key)
    assert r0.get(key).decode() == claim_owner() == f"{HOST}:{os.getpid()}"
    assert r0.ttl(key) > CLAIM_TTL - 60  # held as long as a new claim


def test_a_claim_whose_owner_lives_is_kept(claim, live_pid):
    r0, key = claim
    r0.set(key, f"{HOST}:{live_pid}", ex=CLAIM_TTL)
    assert not take_claim(r0, key)
    assert r0.get(key).decode() == f"{HOST}:{live_pid}"
    r0.set(key, claim_owner(), ex=CLAIM_TTL)  # this process's own claim (another environment of it)
    assert not take_claim(r0, key)


def test_claims_this_host_cannot_check_are_left_to_expire(claim, dead_pid):
    r0, key = claim
    for owner in (f"another-host:{dead_pid}", str(dead_pid)):  # another machine's; an older claim without a host
        r0.set(key, owner, ex=CLAIM_TTL)
        assert not take_claim(r0, key)
        assert r0.get(key).decode() == owner


def test_of_two_claimers_of_a_dead_owners_db_one_takes_it(claim, dead_pid, monkeypatch):
    """Another claimer takes the claim over between this one's read and its write: the
    write compares with what was read, so the other keeps it."""
    r0, key = claim
    r0.set(key, f"{HOST}:{dead_pid}", ex=CLAIM_TTL)
    seen = conftest.owner_dead

    def raced(owner):
        r0.set(key, f"{HOST}:{os.getppid()}", ex=CLAIM_TTL)  # the other claimer won
        return seen(owner)

    monkeypatch.setattr(conftest, "owner_dead", raced)
    assert not take_claim(r0, key)
    assert r0.get(key).decode() == f"{HOST}:{os.getppid()}"


def test_a_free_claim_is_taken_with_the_owner_recorded(claim):
    r0, key = claim
    assert take_claim(r0, key)
    assert r0.get(key).decode() == claim_owner()
    assert not take_claim(r0, key)  # held by a live process now: this one
