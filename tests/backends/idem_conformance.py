"""Conformance tests for an :class:`~pipekit.stores.IdempotencyStore`.

Every idempotency store must pass these. A backend's test module imports
them and provides one fixture, ``make_store``: a function that returns a new
handle (a new client object) on one empty store private to the test; two
handles from one ``make_store`` see the same records, as two processes would.
Parametrize that fixture to run the suite against several setups, e.g.::

    from idem_conformance import *  # noqa: F401,F403

    @pytest.fixture(params=["fakeredis", "redis-server"])
    def make_store(request, tmp_path):
        ...
        return lambda: RedisIdempotencyStore(client_factory(), prefix=unique)

Times are real: records are made to expire by writing ``expires`` in the
past, never by sleeping.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from pipekit.stores import IdemRecord

__all__ = [name for name in dir() if name.startswith("test_")]  # filled at the end

Store = Any
MakeStore = Callable[[], Store]


@pytest.fixture
def store(make_store: MakeStore) -> Store:
    return make_store()


def rec(
    key: str = "op:k1", status: str = "PENDING", owner: str | None = "o1", **kw: Any
) -> IdemRecord:
    now = time.time()
    fields: dict[str, Any] = {
        "key": key,
        "status": status,
        "fingerprint": "fp1",
        "created": now,
        "updated": now,
        "expires": now + 60,
        "owner": owner,
    }
    fields.update(kw)
    return IdemRecord(**fields)


def past() -> float:
    return time.time() - 10


# -- reads ----------------------------------------------------------------------


def test_absent_key_reads_as_none(store: Store) -> None:
    assert store.get("op:nothing") is None
    assert store.get_many(["op:nothing", "op:none"]) == {}
    assert list(store.keys()) == []


def test_create_then_get_round_trips_every_field(store: Store) -> None:
    r = rec(
        status="SUCCESS",
        result={"a": [1, 2.5, None, True, "é"], "b": {"c": ""}},
        error={"type": "ValueError", "message": "m", "retryable": False},
        token=7,
        fence="stage/p/s",
        expires=None,
    )
    assert store.create(r) is None
    assert store.get(r.key) == r


def test_get_many_returns_the_live_ones(make_store: MakeStore) -> None:
    a, b = make_store(), make_store()
    a.create(rec("op:1"))
    a.create(rec("op:2", expires=past()))
    found = b.get_many(["op:1", "op:2", "op:3"])
    assert set(found) == {"op:1"} and found["op:1"].key == "op:1"


def test_keys_list_only_live_records(store: Store) -> None:
    store.create(rec("op:live"))
    store.create(rec("op:forever", expires=None))
    store.put_many([rec("op:dead", expires=past())])
    assert sorted(store.keys()) == ["op:forever", "op:live"]


@pytest.mark.parametrize(
    "key",
    ["plain:abc", "a/b/c:d", "üñí:çødé", "x" * 1000 + ":h", "with space and : colons:h", "."],
)
def test_any_key_works(store: Store, key: str) -> None:
    assert store.create(rec(key)) is None
    got = store.get(key)
    assert got is not None and got.key == key
    assert list(store.keys()) == [key]
    store.delete(key)
    assert store.get(key) is None


# -- create (put-if-absent) ---------------------------------------------------------


def test_create_refuses_a_live_record_and_returns_it(make_store: MakeStore) -> None:
    a, b = make_store(), make_store()
    first = rec(owner="first")
    assert a.create(first) is None
    existing = b.create(rec(owner="second", fingerprint="other"))
    assert existing == first
    assert a.get(first.key) == first


def test_create_replaces_an_expired_record(store: Store) -> None:
    store.create(rec(owner="old", expires=past()))
    assert store.get("op:k1") is None
    new = rec(owner="new")
    assert store.create(new) is None
    assert store.get("op:k1") == new


def test_create_of_a_never_expiring_record(store: Store) -> None:
    r = rec(status="SUCCESS", expires=None)
    assert store.create(r) is None
    assert store.create(rec(owner="x")) == r


def test_concurrent_creates_have_exactly_one_winner(make_store: MakeStore) -> None:
    n = 16
    handles = [make_store() for _ in range(n)]
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n

    def claim(i: int) -> None:
        barrier.wait()
        results[i] = handles[i].create(rec(owner=f"o{i}"))

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [i for i, r in enumerate(results) if r is None]
    assert len(winners) == 1, results
    assert all(r.owner == f"o{winners[0]}" for r in results if r is not None)
    assert handles[0].get("op:k1").owner == f"o{winners[0]}"


def test_concurrent_creates_over_an_expired_record_have_one_winner(make_store: MakeStore) -> None:
    make_store().create(rec(owner="stale", expires=past()))
    n = 12
    handles = [make_store() for _ in range(n)]
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n

    def claim(i: int) -> None:
        barrier.wait()
        results[i] = handles[i].create(rec(owner=f"o{i}"))

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [i for i, r in enumerate(results) if r is None]
    assert len(winners) == 1, results
    assert handles[0].get("op:k1").owner == f"o{winners[0]}"


# -- replace (compare-and-swap on owner) ---------------------------------------------


def test_replace_with_the_right_owner(make_store: MakeStore) -> None:
    a, b = make_store(), make_store()
    a.create(rec(owner="me"))
    done = rec(status="SUCCESS", owner="me", result={"ok": 1}, expires=None)
    assert b.replace(done, expect_owner="me") is True
    assert a.get("op:k1") == done


def test_replace_with_another_owner_writes_nothing(store: Store) -> None:
    mine = rec(owner="newer")
    store.create(mine)
    assert store.replace(rec(status="SUCCESS", owner="older"), expect_owner="older") is False
    assert store.get("op:k1") == mine


def test_replace_of_an_absent_or_expired_record_writes_nothing(store: Store) -> None:
    assert store.replace(rec(status="SUCCESS"), expect_owner="o1") is False
    assert store.get("op:k1") is None
    store.create(rec(owner="o1", expires=past()))
    assert store.replace(rec(status="SUCCESS", owner="o1"), expect_owner="o1") is False
    assert store.get("op:k1") is None
    assert store.create(rec(owner="o2")) is None


def test_replace_expecting_no_owner(store: Store) -> None:
    store.put_many([rec(status="SUCCESS", owner=None)])
    assert store.replace(rec(status="FAILED", owner="x"), expect_owner="someone") is False
    assert store.replace(rec(status="FAILED", owner="x"), expect_owner=None) is True
    assert store.get("op:k1").status == "FAILED"


def test_concurrent_replaces_have_exactly_one_winner(make_store: MakeStore) -> None:
    make_store().create(rec(owner="claim"))
    n = 12
    handles = [make_store() for _ in range(n)]
    barrier = threading.Barrier(n)
    results: list[bool] = [False] * n

    def takeover(i: int) -> None:
        barrier.wait()
        results[i] = handles[i].replace(rec(owner=f"o{i}"), expect_owner="claim")

    threads = [threading.Thread(target=takeover, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(True) == 1, results
    assert handles[0].get("op:k1").owner == f"o{results.index(True)}"


# -- put_many, delete -------------------------------------------------------------------


@pytest.mark.parametrize("durable", [True, False])
def test_put_many_replaces_unconditionally(store: Store, durable: bool) -> None:
    store.create(rec("op:a", owner="someone"))
    batch = [
        rec("op:a", status="SUCCESS", owner=None, result={"n": 1}, expires=None, token=3),
        rec("op:b", status="SUCCESS", owner=None, result={"n": 2}, expires=None),
    ]
    store.put_many(batch, durable=durable)
    assert store.get_many(["op:a", "op:b"]) == {"op:a": batch[0], "op:b": batch[1]}


def test_put_many_of_nothing(store: Store) -> None:
    store.put_many([])
    assert list(store.keys()) == []


def test_delete(make_store: MakeStore) -> None:
    a, b = make_store(), make_store()
    a.create(rec())
    b.delete("op:k1")
    assert a.get("op:k1") is None
    a.delete("op:k1")  # absent: no error
    assert a.create(rec(owner="again")) is None


# -- sweep, generation ----------------------------------------------------------------


def test_sweep_removes_only_expired_records(store: Store) -> None:
    store.create(rec("op:live"))
    store.put_many([rec("op:forever", expires=None)])
    store.put_many([rec("op:dead1", expires=past()), rec("op:dead2", expires=past())])
    assert store.sweep() == 2
    assert sorted(store.keys()) == ["op:forever", "op:live"]
    assert store.sweep() == 0


def test_sweep_at_a_given_time(store: Store) -> None:
    now = time.time()
    store.create(rec("op:soon", expires=now + 30))
    store.create(rec("op:later", expires=now + 300))
    assert store.sweep(now + 60) == 1
    assert sorted(store.keys()) == ["op:later"]


def test_generation_changes_when_a_record_is_removed(make_store: MakeStore) -> None:
    a, b = make_store(), make_store()
    a.put_many([rec("op:x", status="SUCCESS", expires=None)])
    g0 = a.generation()
    assert g0 is None or isinstance(g0, str)
    if g0 is None:
        pytest.skip("this store does not track generations (the runner then always reads it)")
    assert b.generation() == g0  # stable: reading does not change it
    a.create(rec("op:y"))
    a.replace(rec("op:y", status="SUCCESS"), expect_owner="o1")
    assert b.generation() == g0  # writes must not change it (or the runner never trusts its state)
    b.delete("op:x")
    g1 = a.generation()
    assert g1 != g0
    b.put_many([rec("op:z", expires=past())])
    assert a.sweep() == 1
    assert b.generation() != g1


__all__ = [name for name in dict(globals()) if name.startswith("test_")] + ["store"]
