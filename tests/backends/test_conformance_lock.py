"""Lock backends: the same tests for every backend (see conftest.py)."""

from __future__ import annotations

import re
import threading
import time

import pytest
from backend_kits import kit_fixture  # noqa: F401  (the fixture "kit")
from pipekit.errors import LeaseLost


def test_acquire_excludes_others_until_release(kit) -> None:
    a = kit.a.locks.lock("stage/p/s", 30)
    b = kit.b.locks.lock("stage/p/s", 30)
    assert a.acquire(timeout=0)
    assert not b.acquire(timeout=0)
    assert not b.acquire(timeout=0.05)
    a.release()
    assert b.acquire(timeout=0)
    b.release()


def test_tokens_grow_with_every_acquisition(kit) -> None:
    tokens = []
    for side in (kit.a, kit.b, kit.a):
        lease = side.locks.lock("stage/p/grow", 30)
        assert lease.acquire(timeout=0)
        assert isinstance(lease.token, int)
        tokens.append(lease.token)
        lease.release()
    assert tokens == sorted(tokens) and len(set(tokens)) == 3, tokens


def test_keys_are_independent(kit) -> None:
    a = kit.a.locks.lock("stage/p/one", 30)
    b = kit.b.locks.lock("stage/p/two", 30)
    c = kit.b.locks.lock("stage/other pipeline/one ü", 30)
    assert a.acquire(timeout=0) and b.acquire(timeout=0) and c.acquire(timeout=0)
    for lease in (a, b, c):
        lease.release()


def test_acquire_waits_for_a_release(kit) -> None:
    a = kit.a.locks.lock("stage/p/wait", 30)
    assert a.acquire(timeout=0)
    threading.Timer(0.2, a.release).start()
    b = kit.b.locks.lock("stage/p/wait", 30)
    t0 = time.monotonic()
    assert b.acquire(timeout=5)
    assert 0.1 < time.monotonic() - t0 < 4
    b.release()


def test_waiting_for_a_held_lock_sleeps(kit) -> None:
    """A waiter polls with back-off: half a second of waiting costs its
    thread a few milliseconds of CPU, not half a second of spinning."""
    a = kit.a.locks.lock("stage/p/sleepy", 30)
    assert a.acquire(timeout=0)
    b = kit.b.locks.lock("stage/p/sleepy", 30)
    cpu0, t0 = time.thread_time(), time.monotonic()
    assert not b.acquire(timeout=0.5)
    waited, cpu = time.monotonic() - t0, time.thread_time() - cpu0
    a.release()
    assert waited >= 0.45
    assert cpu < 0.15, f"{cpu:.3f} s of CPU while waiting {waited:.2f} s for a held lock"


def test_context_manager_and_harmless_release(kit) -> None:
    lease = kit.a.locks.lock("stage/p/ctx", 30)
    lease.release()  # not held: nothing happens
    with lease as held:
        assert held is lease
        assert not kit.b.locks.lock("stage/p/ctx", 30).acquire(timeout=0)
    lease.release()
    other = kit.b.locks.lock("stage/p/ctx", 30)
    assert other.acquire(timeout=0)
    other.release()


def test_holder_says_who(kit) -> None:
    a = kit.a.locks.lock("stage/p/who", 30)
    assert a.acquire(timeout=0)
    b = kit.b.locks.lock("stage/p/who", 30)
    assert not b.acquire(timeout=0)
    assert re.fullmatch(r"pid \d+ on host \S+", b.holder() or ""), b.holder()
    a.release()


def test_a_released_lease_can_be_taken_again(kit) -> None:
    lease = kit.a.locks.lock("stage/p/again", 30)
    assert lease.acquire(timeout=0)
    first = lease.token
    lease.release()
    assert lease.acquire(timeout=0)
    assert lease.token > first
    with pytest.raises(RuntimeError):
        lease.acquire(timeout=0)  # already held by this lease
    lease.release()


def test_renewal_keeps_a_working_holder(kit) -> None:
    if not kit.expiring:
        pytest.skip(f"{kit.name} leases do not expire (OS locks)")
    a = kit.a.locks.lock("stage/p/renewed", 0.3)
    assert a.acquire(timeout=0)
    time.sleep(1.0)  # more than 3 TTLs: the renewal thread keeps it
    assert not a.lost
    assert not kit.b.locks.lock("stage/p/renewed", 0.3).acquire(timeout=0)
    a.renew()
    a.release()


def test_a_paused_holder_loses_its_lease(kit) -> None:
    if not kit.expiring:
        pytest.skip(f"{kit.name} leases do not expire (OS locks)")
    a = kit.a.locks.lock("stage/p/paused", 0.3)
    assert a.acquire(timeout=0)
    kit.a.locks.renewer.discard(a)  # as if the process were stopped
    time.sleep(0.45)
    assert a.lost
    b = kit.b.locks.lock("stage/p/paused", 0.3)
    assert b.acquire(timeout=0)
    assert b.token > a.token
    with pytest.raises(LeaseLost):
        a.renew()
    a.release()  # must not free b's lock
    assert not kit.a.locks.lock("stage/p/paused", 0.3).acquire(timeout=0)
    b.release()
