"""Lock backends: the same tests for every backend (see conftest.py)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
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


# -- holder_state (issue 20 item 6): is the holder of a busy lock alive? ----------------

HOLD_SCRIPT = """
import sys, time
kind, where, key, ttl = sys.argv[1:5]
if kind == "file":
    from pathlib import Path
    from pipekit.stores._file_lock import FileLockBackend
    locks = FileLockBackend(Path(where))
else:
    from pipekit_redis.connection import RedisConnection
    from pipekit_redis.lock import RedisLockBackend
    from pipekit_redis.options import parse_options
    locks = RedisLockBackend(RedisConnection(parse_options({"url": where}, environ={})))
lease = locks.lock(key, float(ttl))
assert lease.acquire(timeout=10)
print("held", flush=True)
time.sleep(600)
"""


def _holder_process(kit, key: str, ttl: float) -> subprocess.Popen[str]:
    """A real process that takes ``key`` on the kit's storage and holds it."""
    if kit.name == "fakeredis":
        pytest.skip("a fakeredis server cannot be shared with another process")
    where = str(kit.a.locks.root) if kit.name == "file" else kit.a.locks.conn.options.url
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD_SCRIPT, kit.name, where, key, str(ttl)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == "held\n"
    return proc


def test_holder_state_of_a_free_lock_is_gone(kit) -> None:
    lease = kit.b.locks.lock("stage/p/free-state", 30)
    assert lease.holder_state() == "gone"
    a = kit.a.locks.lock("stage/p/free-state", 30)
    assert a.acquire(timeout=0)
    a.release()
    assert lease.holder_state() == "gone"


def test_holder_state_of_a_holder_in_this_process_is_alive(kit) -> None:
    a = kit.a.locks.lock("stage/p/here-state", 30)
    assert a.acquire(timeout=0)
    b = kit.b.locks.lock("stage/p/here-state", 30)
    assert not b.acquire(timeout=0)
    assert b.holder_state() == "alive"
    a.release()
    assert b.holder_state() == "gone"


def test_a_renewing_holder_stays_alive_past_its_ttl(kit) -> None:
    a = kit.a.locks.lock("stage/p/renewing-state", 0.3)
    assert a.acquire(timeout=0)
    b = kit.b.locks.lock("stage/p/renewing-state", 0.3)
    deadline = time.monotonic() + 1.2  # four TTLs
    while time.monotonic() < deadline:
        assert b.holder_state() == "alive"
        time.sleep(0.05)
    a.release()


def test_a_paused_holder_whose_lease_ran_out_is_gone(kit) -> None:
    if not kit.expiring:
        pytest.skip(f"{kit.name} leases do not expire (OS locks)")
    a = kit.a.locks.lock("stage/p/paused-state", 0.3)
    assert a.acquire(timeout=0)
    kit.a.locks.renewer.discard(a)  # as if the process were stopped
    b = kit.b.locks.lock("stage/p/paused-state", 0.3)
    assert b.holder_state() == "alive"
    deadline = time.monotonic() + 10
    while b.holder_state() != "gone":
        assert time.monotonic() < deadline, "an expired lease still counts as alive"
        time.sleep(0.05)
    a.release()


def test_holder_state_of_a_holder_process_alive_then_killed(kit) -> None:
    holder = _holder_process(kit, "stage/p/process-state", 30)
    try:
        waiter = kit.b.locks.lock("stage/p/process-state", 30)
        assert not waiter.acquire(timeout=0)
        assert waiter.holder_state() == "alive"
        assert waiter.holder() == f"pid {holder.pid} on host {os.uname().nodename}"
    finally:
        holder.kill()
        holder.wait()
    # file: the OS freed the lock; Redis: the key outlives its holder
    # (until its TTL), whose pid is gone from this machine
    assert waiter.holder_state() == "gone"
    assert waiter.acquire(timeout=5)
    waiter.release()


def test_a_holder_on_another_machine_is_alive_until_its_lease_runs_out(kit) -> None:
    """A lock value naming a process of another machine: its pid says
    nothing here; the lease's TTL does."""
    if kit.name == "file":
        lock_file = kit.a.locks.lock("stage/p/remote-state").path
        other = kit.a.locks.lock("stage/p/remote-state")
        assert other.acquire(timeout=0)
        lock_file.write_text("7 pid 999999999 on host elsewhere.example\n")
        waiter = kit.b.locks.lock("stage/p/remote-state")
        assert waiter.holder_state() == "alive"  # the OS lock is held for it
        other.release()
        assert waiter.holder_state() == "gone"
        return
    conn = kit.a.locks.conn
    value = "0123abcd.othermachine pid 999999999 on host elsewhere.example"
    conn.call(lambda c: c.set(conn.key("lock", "stage/p/remote-state"), value, px=400), "test")
    waiter = kit.b.locks.lock("stage/p/remote-state", 30)
    assert waiter.holder_state() == "alive"
    assert not waiter.acquire(timeout=0)
    deadline = time.monotonic() + 10
    while waiter.holder_state() != "gone":
        assert time.monotonic() < deadline, "an expired remote lease still counts as alive"
        time.sleep(0.05)
    assert waiter.acquire(timeout=0)
    waiter.release()


def test_a_lock_file_that_is_a_folder(tmp_path) -> None:
    """Issue 20 item 12: an empty folder where a lock file goes is replaced
    by the lock file; one with files in it is a clear error naming it."""
    from pipekit.errors import StorageError
    from pipekit.stores import _file_factories as file_factories

    locks = file_factories.lock_backend({}, state_dir=tmp_path / "state")
    lease = locks.lock("stage/p/folder")
    lease.path.mkdir(parents=True)
    assert lease.acquire(timeout=0)
    assert lease.path.is_file()
    lease.release()
    lease.path.unlink()
    (lease.path / "something").mkdir(parents=True)
    with pytest.raises(StorageError, match=re.escape(str(lease.path)) + " is a folder"):
        lease.acquire(timeout=0)
    assert lease.holder() is None
    assert lease.holder_state() == "unknown"


def test_a_lock_file_is_rewritten_in_place_over_a_longer_old_line(tmp_path) -> None:
    """The holder line is overwritten at one width, never truncated
    (truncating a file frees its block: 95 ms once on ext4 in a rerun); a
    longer line an older pipekit left is covered, and still read right."""
    from pipekit.stores import _file_factories as file_factories

    locks = file_factories.lock_backend({}, state_dir=tmp_path / "state")
    lease = locks.lock("stage/p/s")
    lease.path.parent.mkdir(parents=True)
    lease.path.write_text("41 pid 1 on host " + "old-host-" * 10 + "\n")
    assert lease.acquire(timeout=0) and lease.token == 42
    assert lease.holder() == f"pid {os.getpid()} on host {os.uname().nodename}"
    lease.release()
    sizes = set()
    for token in (43, 44):
        assert lease.acquire(timeout=0) and lease.token == token
        sizes.add(lease.path.stat().st_size)
        lease.release()
    assert sizes == {128}


def test_the_state_lock_line_covers_a_longer_old_one(tmp_path) -> None:
    from pipekit.state._lock import StateLock, describe_holder

    path = tmp_path / "state.json.lock"
    path.write_text("pid 1 on host " + "old-host-" * 10 + "\n")
    lock = StateLock(path, tmp_path / "state.json", None)
    lock.acquire(exclusive=True)
    try:
        assert path.stat().st_size == 128
        assert (
            describe_holder(path)
            == f"pid {os.getpid()} on host {os.uname().nodename} (this process)"
        )
    finally:
        lock.release()
