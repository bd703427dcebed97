"""IdempotencyManager: Stripe's semantics over the file store."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from pipekit import (
    IdempotencyClaimLost,
    IdempotencyConflict,
    IdempotencyFailed,
    IdempotencyInProgress,
    IdempotencyManager,
    IdempotencyStatus,
)
from pipekit.errors import IdempotencyError, PipekitError
from pipekit.idempotency import default_store_dir, open_store
from pipekit.stores._file_idempotency import FileIdempotencyStore


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "idem"


def manager(root: Path, **kw: Any) -> IdempotencyManager:
    return IdempotencyManager(root, **kw)


def test_first_caller_runs_then_every_caller_gets_the_result(root: Path) -> None:
    m = manager(root)
    claim = m.begin("op:1", "fp")
    assert claim.miss and claim.claimed and claim.state == "PENDING" and claim.owner
    done = m.complete(claim, {"n": 1})
    assert done.state == "SUCCESS" and done.result == {"n": 1}
    hit = manager(root).begin("op:1", "fp")
    assert hit.hit and hit.state == "SUCCESS" and hit.result == {"n": 1}
    assert hit.created == claim.created


def test_the_status_object(root: Path) -> None:
    m = manager(root, ttl=100)
    claim = m.begin("op:1", "fp")
    m.complete(claim, [1, 2])
    s = m.get("op:1")
    assert isinstance(s, IdempotencyStatus)
    assert (s.key, s.state, s.hit, s.fingerprint) == ("op:1", "SUCCESS", True, "fp")
    assert s.created is not None and s.expires is not None
    assert 99 < s.ttl_left <= 100
    doc = s.to_json()
    assert doc["result"] == [1, 2] and doc["expires_iso"].endswith("Z")
    absent = m.get("op:none")
    assert absent.state == "ABSENT" and absent.miss and absent.ttl_left is None


def test_same_key_different_fingerprint_is_a_conflict_in_every_state(root: Path) -> None:
    m = manager(root)
    pending = m.begin("op:p", "fp1")
    with pytest.raises(IdempotencyConflict) as err:
        m.begin("op:p", "fp2", wait=0)
    assert err.value.stored_fingerprint == "fp1" and err.value.fingerprint == "fp2"
    assert isinstance(err.value, IdempotencyError) and isinstance(err.value, PipekitError)
    m.complete(pending, 1)
    with pytest.raises(IdempotencyConflict, match="pipekit idem forget"):
        m.begin("op:p", "fp2")
    failed = m.begin("op:f", "fp1")
    m.fail(failed, ValueError("x"))
    with pytest.raises(IdempotencyConflict):
        m.begin("op:f", "fp2")
    assert m.get("op:p").result == 1  # never a silent wrong answer, never overwritten


def test_a_concurrent_caller_gets_in_progress_without_waiting(root: Path) -> None:
    m = manager(root, pending_timeout=60)
    claim = m.begin("op:1")
    with pytest.raises(IdempotencyInProgress) as err:
        m.begin("op:1", wait=0)
    assert err.value.owner == claim.owner
    assert err.value.expires == pytest.approx(claim.created + 60)
    t0 = time.monotonic()
    with pytest.raises(IdempotencyInProgress):
        m.begin("op:1", wait=0.2)
    assert 0.18 <= time.monotonic() - t0 < 2


def test_a_concurrent_caller_waits_for_the_result(root: Path) -> None:
    m = manager(root)
    claim = m.begin("op:1")
    threading.Timer(0.2, lambda: m.complete(claim, "done")).start()
    t0 = time.monotonic()
    got = manager(root).begin("op:1", wait=10)
    assert got.hit and got.result == "done"
    assert time.monotonic() - t0 < 5


def test_a_waiter_replays_the_failure_it_waited_for(root: Path) -> None:
    m = manager(root)
    claim = m.begin("op:1")
    threading.Timer(0.1, lambda: m.fail(claim, KeyError("k"))).start()
    with pytest.raises(IdempotencyFailed, match="KeyError"):
        manager(root).begin("op:1", wait=10)


def test_a_stale_claim_is_taken_over_and_its_late_completion_is_refused(root: Path) -> None:
    m = manager(root, pending_timeout=0.5)
    first = m.begin("op:1", "fp")
    with pytest.raises(IdempotencyInProgress):
        m.begin("op:1", "fp", wait=0)
    time.sleep(0.55)
    second = m.begin("op:1", "fp", wait=0)
    assert second.claimed and second.owner != first.owner
    with pytest.raises(IdempotencyClaimLost) as err:
        m.complete(first, "late")
    assert err.value.current.owner == second.owner
    with pytest.raises(IdempotencyClaimLost):
        m.fail(first, RuntimeError("late"))
    assert m.get("op:1").state == "PENDING" and m.get("op:1").owner == second.owner
    m.complete(second, "new")
    with pytest.raises(IdempotencyClaimLost):
        m.complete(first, "late")
    assert m.get("op:1").result == "new"


def test_a_waiter_takes_over_when_the_claim_expires(root: Path) -> None:
    m = manager(root, pending_timeout=0.3)
    m.begin("op:1")
    t0 = time.monotonic()
    took = m.begin("op:1", wait=5)  # waits for the claim to expire, then claims
    assert took.claimed and 0.25 <= time.monotonic() - t0 < 3


def test_an_expired_claim_nobody_took_still_stores_its_result(root: Path) -> None:
    m = manager(root, pending_timeout=0.1)
    claim = m.begin("op:1")
    time.sleep(0.15)
    assert m.get("op:1").state == "ABSENT"
    m.complete(claim, 42)
    assert m.begin("op:1").result == 42


def test_success_expires_after_its_ttl(root: Path) -> None:
    m = manager(root, ttl=0.5)
    m.complete(m.begin("op:1"), 1)
    assert m.begin("op:1").hit
    time.sleep(0.55)
    assert m.get("op:1").state == "ABSENT"
    again = m.begin("op:1")
    assert again.claimed


def test_ttl_none_keeps_a_success_forever(root: Path) -> None:
    m = manager(root, ttl=None)
    m.complete(m.begin("op:1"), 1)
    assert m.get("op:1").expires is None and m.get("op:1").ttl_left is None
    assert m.sweep(time.time() + 10**9) == 0


def test_failed_is_replayed_until_its_shorter_ttl_expires(root: Path) -> None:
    m = manager(root, ttl=3600, failed_ttl=0.5)
    claim = m.begin("op:1", "fp")
    failed = m.fail(claim, ValueError("bad input"))
    assert failed.state == "FAILED" and failed.ttl_left <= 0.5
    assert failed.error == {"type": "ValueError", "message": "bad input", "retryable": False}
    for _ in range(2):
        with pytest.raises(IdempotencyFailed) as err:
            m.begin("op:1", "fp")
        assert err.value.error_type == "ValueError" and err.value.error_message == "bad input"
    time.sleep(0.55)
    assert m.begin("op:1", "fp").claimed


def test_a_retryable_failure_is_not_replayed(root: Path) -> None:
    m = manager(root)
    first = m.begin("op:1")
    m.fail(first, ConnectionError("reset"), retryable=True)
    s = m.get("op:1")
    assert s.state == "FAILED" and s.error["retryable"] is True  # kept, for `idem show`
    second = m.begin("op:1", wait=0)
    assert second.claimed and second.owner != first.owner
    assert m.get("op:1").state == "PENDING"


def test_release_lets_the_next_caller_run_at_once(root: Path) -> None:
    m = manager(root)
    m.release(m.begin("op:1"), "cancelled")
    assert m.begin("op:1", wait=0).claimed


def test_error_types_are_qualified(root: Path) -> None:
    class Custom(Exception):
        pass

    m = manager(root)
    m.fail(m.begin("op:1"), Custom("x"))
    assert m.get("op:1").error["type"].endswith("test_error_types_are_qualified.<locals>.Custom")


def test_a_result_with_no_json_form_fails_before_writing(root: Path) -> None:
    m = manager(root)
    claim = m.begin("op:1")
    with pytest.raises(TypeError, match="cannot be stored as JSON"):
        m.complete(claim, object())
    assert m.get("op:1").state == "PENDING"  # nothing written: the claim holds
    m.complete(claim, "fine")


def test_complete_needs_a_claim(root: Path) -> None:
    m = manager(root)
    m.complete(m.begin("op:1"), 1)
    hit = m.begin("op:1")
    with pytest.raises(ValueError, match="claim"):
        m.complete(hit, 2)


def test_forget_list_and_sweep(root: Path) -> None:
    m = manager(root, failed_ttl=0.5)
    for i in range(3):
        m.complete(m.begin(f"a:{i}"), i)
    m.fail(m.begin("b:1"), ValueError("x"))
    assert [s.key for s in m.list()] == ["a:0", "a:1", "a:2", "b:1"]
    assert [s.key for s in m.list("a:")] == ["a:0", "a:1", "a:2"]
    assert m.forget("a:1") is True
    assert m.forget("a:1") is False
    assert m.begin("a:1").claimed
    time.sleep(0.55)
    assert m.sweep() == 1  # the FAILED one expired
    assert [s.key for s in m.list()] == ["a:0", "a:1", "a:2"]
    store = FileIdempotencyStore(root)
    assert sorted(p.name for p in root.glob("*/*.json")) == sorted(
        store.path_for(k).name for k in ("a:0", "a:1", "a:2")
    )


def test_threads_racing_for_one_key_run_it_once(root: Path) -> None:
    m = manager(root)
    runs: list[int] = []
    results: list[Any] = []
    barrier = threading.Barrier(8)

    def call(i: int) -> None:
        barrier.wait()
        s = m.begin("op:1", "fp", wait=10)
        if s.claimed:
            runs.append(i)
            time.sleep(0.1)
            s = m.complete(s, f"by {i}")
        results.append(s.result)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(runs) == 1 and results == [f"by {runs[0]}"] * 8


def test_invalid_settings_are_refused(root: Path) -> None:
    for kw in ({"ttl": 0}, {"failed_ttl": -1}, {"pending_timeout": 0}, {"wait": -1}):
        with pytest.raises(ValueError):
            manager(root, **kw)


def test_open_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a = open_store(tmp_path / "x")
    assert open_store(str(tmp_path / "x")) is a  # one object per folder
    assert open_store(a) is a
    with pytest.raises(TypeError, match="has no get, create, replace, delete"):
        open_store(object())
    monkeypatch.setenv("PIPEKIT_IDEMPOTENCY_DIR", str(tmp_path / "env"))
    assert default_store_dir() == tmp_path / "env"
    monkeypatch.delenv("PIPEKIT_IDEMPOTENCY_DIR")
    monkeypatch.chdir(tmp_path)
    assert default_store_dir() == tmp_path / ".pipekit" / "idempotency"
    assert IdempotencyManager().store.root == tmp_path / ".pipekit" / "idempotency"
