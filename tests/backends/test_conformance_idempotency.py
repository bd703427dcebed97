"""Idempotency stores: the same tests for every backend (see backend_kits.py).

Methods a store does not have yet (the file store before the idempotency
manager lands) are skipped with that reason, never passed silently.
"""

from __future__ import annotations

import time

import pytest
from backend_kits import kit_fixture  # noqa: F401  (the fixture "kit")
from pipekit.errors import FencedOut
from pipekit.stores import IdemRecord


def rec(key: str, status: str = "SUCCESS", **kw) -> IdemRecord:
    return IdemRecord(key=key, status=status, fingerprint=kw.pop("fingerprint", "fp"), **kw)


def needs(store, *methods: str) -> None:
    for m in methods:
        if not hasattr(store, m):
            pytest.skip(f"{type(store).__name__} has no {m}() yet")


def test_put_get_round_trip(kit) -> None:
    s = kit.idempotency
    assert s.get("stage/p/a:1") is None
    r = rec(
        "stage/p/a:1",
        result={"outputs": {"out/x.txt": "ab" * 32}, "n": [1, 2.5, None, True], "ü": "ß"},
        created=1234.5,
        token=7,
        fence="stage/p/a",
        owner="me",
        updated=1235.0,
    )
    s.put_many([r])
    assert s.get("stage/p/a:1") == r
    assert kit.b.idempotency.get("stage/p/a:1") == r  # another runner sees it


def test_put_many_replaces_and_get_many(kit) -> None:
    s = kit.idempotency
    s.put_many([rec("k1", result=1), rec("k2", result=2)])
    s.put_many([rec("k1", result=10)], durable=True)
    got = s.get_many(["k1", "k2", "absent", "k1"])
    assert set(got) == {"k1", "k2"}
    assert got["k1"].result == 10 and got["k2"].result == 2
    assert s.get_many([]) == {}


def test_delete(kit) -> None:
    s = kit.idempotency
    s.put_many([rec("gone")])
    s.delete("gone")
    s.delete("gone")  # absent: no error
    assert s.get("gone") is None


def test_expired_reads_as_absent(kit) -> None:
    s = kit.idempotency
    s.put_many([rec("old", expires=time.time() - 1), rec("live", expires=time.time() + 60)])
    assert s.get("old") is None
    assert s.get("live") is not None
    assert set(s.get_many(["old", "live"])) == {"live"}


def test_create_is_put_if_absent(kit) -> None:
    s = kit.idempotency
    needs(s, "create")
    first = rec("claim", "PENDING", owner="o1", expires=time.time() + 60)
    assert s.create(first) is None
    live = kit.b.idempotency.create(rec("claim", "PENDING", owner="o2"))
    assert live is not None and live.owner == "o1"
    assert s.get("claim").owner == "o1"


def test_create_over_an_expired_record(kit) -> None:
    s = kit.idempotency
    needs(s, "create")
    s.put_many([rec("stale", "PENDING", owner="o1", expires=time.time() - 1)])
    assert s.create(rec("stale", "PENDING", owner="o2")) is None
    assert s.get("stale").owner == "o2"


def test_replace_is_compare_and_swap_on_owner(kit) -> None:
    s = kit.idempotency
    needs(s, "create", "replace")
    assert not s.replace(rec("cas", owner="o1"), expect_owner="o1")  # no live record
    assert s.create(rec("cas", "PENDING", owner="o1")) is None
    assert not s.replace(rec("cas", "SUCCESS", owner="o2"), expect_owner="o2")
    assert s.get("cas").status == "PENDING"
    assert s.replace(rec("cas", "SUCCESS", owner="o1", result={"r": 1}), expect_owner="o1")
    got = s.get("cas")
    assert got.status == "SUCCESS" and got.result == {"r": 1}
    # a takeover: the new owner replaces the old one's record
    assert s.replace(rec("cas", "PENDING", owner="o3"), expect_owner="o1")
    assert not s.replace(rec("cas", "SUCCESS", owner="o1"), expect_owner="o1")
    assert s.get("cas").owner == "o3"


def test_keys_lists_live_records(kit) -> None:
    s = kit.idempotency
    needs(s, "keys")
    s.put_many([rec("a/1"), rec("b:2"), rec("x", expires=time.time() - 1)])
    assert sorted(s.keys()) == ["a/1", "b:2"]


def test_sweep_removes_what_expired(kit) -> None:
    s = kit.idempotency
    needs(s, "sweep")
    now = time.time()
    s.put_many([rec("soon", expires=now + 30), rec("later", expires=now + 3600), rec("never")])
    assert s.sweep(now=now + 60) == 1
    assert s.get("soon") is None  # (also absent by expiry, were it past)
    assert s.get("later") is not None and s.get("never") is not None


def test_stale_fencing_token_is_refused(kit) -> None:
    if not kit.fencing:
        pytest.skip(f"{kit.name} stores do not check fencing tokens (OS locks cannot expire)")
    a = kit.a.locks.lock("stage/p/fenced", 0.3)
    assert a.acquire(timeout=0)
    kit.a.locks.renewer.discard(a)  # paused holder
    time.sleep(0.45)
    b = kit.b.locks.lock("stage/p/fenced", 30)
    assert b.acquire(timeout=0)
    newer = rec("stage/p/fenced:fp", result="b", token=b.token, fence=b.key)
    kit.b.idempotency.put_many([newer])
    stale = rec("stage/p/fenced:fp", result="a", token=a.token, fence=a.key)
    other = rec("stage/p/unrelated:fp", result="a")
    with pytest.raises(FencedOut) as info:
        kit.a.idempotency.put_many([stale, other])
    assert info.value.keys == ("stage/p/fenced:fp",)
    assert kit.a.idempotency.get("stage/p/fenced:fp").result == "b"
    assert kit.a.idempotency.get("stage/p/unrelated:fp") is not None  # the rest was stored
    b.release()


def test_a_newer_holder_fences_out_an_older_one_before_writing(kit) -> None:
    """The fence rises when the lock is taken, not only when records are
    written: a paused holder cannot commit once another holds the lock."""
    if not kit.fencing:
        pytest.skip(f"{kit.name} stores do not check fencing tokens (OS locks cannot expire)")
    a = kit.a.locks.lock("stage/p/early", 0.3)
    assert a.acquire(timeout=0)
    kit.a.locks.renewer.discard(a)
    time.sleep(0.45)
    b = kit.b.locks.lock("stage/p/early", 30)
    assert b.acquire(timeout=0)
    with pytest.raises(FencedOut):
        kit.a.idempotency.put_many([rec("stage/p/early:fp", token=a.token, fence=a.key)])
    assert kit.a.idempotency.get("stage/p/early:fp") is None
    b.release()
