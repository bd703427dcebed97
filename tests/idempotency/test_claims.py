"""PENDING claims of a process that is gone, and keys that are no keys
(issue 20, "Smaller")."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import attrs
import pytest
from pipekit import IdempotencyInProgress, IdempotencyManager

CLAIMANT = textwrap.dedent(
    """
    import sys, time
    from pipekit import IdempotencyManager
    manager = IdempotencyManager(sys.argv[1], pending_timeout=3600)
    status = manager.begin("charge-42", "fp")
    assert status.claimed
    print("claimed", flush=True)
    time.sleep(3600)
    """
)


def _claim_in_a_process(store: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", CLAIMANT, str(store)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "claimed"
    return proc


def test_the_claim_of_a_killed_process_is_taken_over_at_once(tmp_path: Path) -> None:
    proc = _claim_in_a_process(tmp_path / "store")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)

    manager = IdempotencyManager(tmp_path / "store", pending_timeout=3600)
    status = manager.begin("charge-42", "fp", wait=0)  # no waiting out the hour
    assert status.claimed
    assert manager.store.get("charge-42").owner == status.owner
    manager.complete(status, 42)
    assert manager.begin("charge-42", "fp").result == 42


def test_the_claim_of_a_live_process_is_not_taken_over(tmp_path: Path) -> None:
    proc = _claim_in_a_process(tmp_path / "store")
    try:
        manager = IdempotencyManager(tmp_path / "store", pending_timeout=3600)
        with pytest.raises(IdempotencyInProgress):
            manager.begin("charge-42", "fp", wait=0)
    finally:
        proc.kill()
        proc.wait(timeout=60)


def test_a_claim_of_another_machine_is_not_taken_over(tmp_path: Path) -> None:
    """An owner that names a PID of another boot or PID namespace says
    nothing about this machine's processes: the claim only expires."""
    proc = _claim_in_a_process(tmp_path / "store")
    proc.kill()
    proc.wait(timeout=60)
    manager = IdempotencyManager(tmp_path / "store", pending_timeout=3600)
    record = manager.store.get("charge-42")
    tag, rest = record.owner.split(" ", 1)
    foreign = f"{tag.split('.')[0]}.0123456789ab {rest}"
    assert manager.store.replace(attrs.evolve(record, owner=foreign), expect_owner=record.owner)
    with pytest.raises(IdempotencyInProgress):
        manager.begin("charge-42", "fp", wait=0)


@pytest.mark.parametrize("key", ["", None, 5])
def test_an_empty_key_is_refused(tmp_path: Path, key: object) -> None:
    manager = IdempotencyManager(tmp_path / "store")
    with pytest.raises(ValueError, match="non-empty string"):
        manager.begin(key, "fp")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-empty string"):
        manager.try_begin(key, "fp")  # type: ignore[arg-type]
    assert list(manager.list()) == []
