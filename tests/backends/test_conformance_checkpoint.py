"""Checkpoint byte stores: the same tests for every backend (see backend_kits.py)."""

from __future__ import annotations

import os
import threading
import time

import pytest
from backend_kits import kit_fixture  # noqa: F401  (the fixture "kit")
from pipekit.errors import FencedOut


def test_put_get_list_delete(kit) -> None:
    s = kit.checkpoints
    assert s.get("p.s", "stage") is None
    assert s.list("p.s") == []
    s.put("p.s", "stage", b"one")
    s.put("p.s", "0002", b"two")
    s.put("p.other", "stage", b"three")
    assert s.get("p.s", "stage") == b"one"
    assert kit.b.checkpoints.get("p.s", "0002") == b"two"
    assert s.list("p.s") == ["0002", "stage"]
    s.delete("p.s", "stage")
    s.delete("p.s", "stage")  # absent: no error
    assert s.get("p.s", "stage") is None
    assert s.list("p.s") == ["0002"]
    assert s.get("p.other", "stage") == b"three"


def test_put_replaces(kit) -> None:
    s = kit.checkpoints
    s.put("p.s", "stage", b"x" * 10_000)
    s.put("p.s", "stage", b"short")
    assert s.get("p.s", "stage") == b"short"
    s.put("p.s", "stage", b"")
    assert s.get("p.s", "stage") == b""


@pytest.mark.parametrize("size", [0, 1, 4095, 4096, 4097, 3 * 1024 * 1024 + 7])
def test_binary_blobs_of_every_size(kit, size: int) -> None:
    data = os.urandom(size)
    kit.checkpoints.put("p.bin", "blob", data)
    assert kit.b.checkpoints.get("p.bin", "blob") == data


def test_readers_see_old_or_new_never_a_mix(kit) -> None:
    s = kit.checkpoints
    blobs = [bytes([i]) * (5 * 4096 + 100 * i) for i in range(1, 6)]
    s.put("p.race", "stage", blobs[0])
    stop = threading.Event()
    bad: list[int] = []

    def reader() -> None:
        while not stop.is_set():
            got = kit.b.checkpoints.get("p.race", "stage")
            if got not in blobs:
                bad.append(-1 if got is None else len(got))

    t = threading.Thread(target=reader)
    t.start()
    try:
        for _ in range(8):
            for blob in blobs:
                s.put("p.race", "stage", blob)
    finally:
        stop.set()
        t.join()
    assert not bad, bad[:5]


def test_stale_fencing_token_is_refused(kit) -> None:
    if not kit.fencing:
        pytest.skip(f"{kit.name} stores do not check fencing tokens (OS locks cannot expire)")
    a = kit.a.locks.lock("stage/p/cp", 0.3)
    assert a.acquire(timeout=0)
    kit.a.locks.renewer.discard(a)
    time.sleep(0.45)
    b = kit.b.locks.lock("stage/p/cp", 30)
    assert b.acquire(timeout=0)
    kit.b.checkpoints.put("p.cp", "stage", b"newer", fence=(b.key, b.token))
    with pytest.raises(FencedOut):
        kit.a.checkpoints.put("p.cp", "stage", b"older" * 5000, fence=(a.key, a.token))
    assert kit.a.checkpoints.get("p.cp", "stage") == b"newer"
    kit.b.checkpoints.put("p.cp", "stage", b"again", fence=(b.key, b.token))  # same token: fine
    assert kit.a.checkpoints.get("p.cp", "stage") == b"again"
    b.release()


def test_current_token_is_accepted(kit) -> None:
    lease = kit.a.locks.lock("stage/p/ok", 30)
    assert lease.acquire(timeout=0)
    kit.a.checkpoints.put("p.ok", "stage", b"data", fence=(lease.key, lease.token))
    assert kit.a.checkpoints.get("p.ok", "stage") == b"data"
    lease.release()
