"""PipelineState under real concurrency and real SIGKILLs.

Worker processes are forked (``multiprocessing`` with the ``fork`` start
method) so that each starts in milliseconds with pipekit already imported:
the kills land on transactions, not on interpreter start-up."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import random
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from pipekit import PipelineState
from pipekit._atomic import TEMP_MARK
from pipekit.state._pipeline_state import encode

pytestmark = pytest.mark.skipif(
    "fork" not in multiprocessing.get_all_start_methods(), reason="needs fork()"
)
FORK = (
    multiprocessing.get_context("fork")
    if "fork" in multiprocessing.get_all_start_methods()
    else None
)


# -- 8 processes x 200 read-modify-write transactions ----------------------------

WRITERS = 8
PER_WRITER = 200


def _increment(path: str, n: int) -> None:
    state = PipelineState(path, lock_timeout=120)
    for _ in range(n):
        with state.transaction() as tx:
            tx.data["count"] = tx.data.get("count", 0) + 1
            tx.data["by"] = os.getpid()


def _read_until(path: str, stop: Any, results: Any) -> None:
    """Read through the API (shared lock) and by plain opens (no lock: the
    file is only ever replaced by a rename) until told to stop; report the
    number of reads and anything wrong seen."""
    state = PipelineState(path, lock_timeout=120)
    problems: list[str] = []
    last = 0
    reads = 0
    while not stop.is_set():
        for how in ("api", "plain"):
            try:
                if how == "api":
                    data = state.read()
                else:
                    with open(path, "rb") as fh:
                        data = json.loads(fh.read())
            except FileNotFoundError:
                continue  # before the first transaction
            except Exception as exc:
                problems.append(f"{how} read failed: {type(exc).__name__}: {exc}")
                continue
            count = data.get("count", 0) if isinstance(data, dict) else -1
            if count < last:
                problems.append(f"{how} read went back from {last} to {count}")
            last = max(last, count)
            reads += 1
    results.put((reads, problems))


def test_concurrent_transactions_lose_no_update_and_readers_never_see_a_torn_file(
    tmp_path: Path,
) -> None:
    assert FORK is not None
    path = str(tmp_path / "counter.json")
    stop = FORK.Event()
    results = FORK.Queue()
    readers = [FORK.Process(target=_read_until, args=(path, stop, results)) for _ in range(2)]
    writers = [FORK.Process(target=_increment, args=(path, PER_WRITER)) for _ in range(WRITERS)]
    for p in readers + writers:
        p.start()
    for p in writers:
        p.join(timeout=240)
    stop.set()
    outcomes = [results.get(timeout=60) for _ in readers]
    for p in readers:
        p.join(timeout=60)
    assert [p.exitcode for p in writers] == [0] * WRITERS
    assert [p.exitcode for p in readers] == [0, 0]

    state = PipelineState(path)
    assert state.read()["count"] == WRITERS * PER_WRITER == 1600
    for reads, problems in outcomes:
        assert problems == []
        assert reads > 0
    history = state.history()
    assert len(history) == 1600
    assert all(e.success and e.changed for e in history)
    assert len({e.pid for e in history}) == WRITERS
    assert len(state.list_backups()) == 50  # rotated to max_backups
    counts = sorted(state.load_backup(b)["count"] for b in state.list_backups())
    assert counts == list(range(1550, 1600))  # the 50 contents before the last


# -- SIGKILL at random instants during transactions ----------------------------------

PAYLOAD_BYTES = 10_000


def content(k: int) -> dict[str, Any]:
    """The state after transaction k: deterministic, ~10 KB."""
    word = hashlib.sha256(str(k).encode()).hexdigest()
    return {"k": k, "payload": [word] * (PAYLOAD_BYTES // 70)}


def _transact_for_ever(path: str, report_fd: int) -> None:
    state = PipelineState(path, max_backups=5, lock_timeout=30)
    while True:
        k = state.read()["k"] + 1
        os.write(report_fd, f"{k}\n".encode())  # "beginning transaction k"
        with state.transaction() as tx:
            assert tx.data["k"] == k - 1
            tx.data = content(k)


def _inode(p: Path) -> int | None:
    try:
        return os.stat(p).st_ino
    except FileNotFoundError:
        return None


@pytest.mark.parametrize("sync", ["syncfs", "fsync"])
def test_sigkill_during_transactions_leaves_old_or_new_content_and_a_readable_log(
    tmp_path: Path, sync: str, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    """With one syncfs per commit (Linux) and with an fsync per folder and log."""
    assert FORK is not None
    from pipekit import _atomic as atomic

    monkeypatch.setenv("PIPEKIT_SYNC", sync)
    atomic._get_syncfs.cache_clear()  # decided again, from the variable
    request.addfinalizer(atomic._get_syncfs.cache_clear)
    path = tmp_path / "state.json"
    state = PipelineState(path, max_backups=5)
    state.write(content(0))
    rng = random.Random(4)
    kills = 0
    progressed = 0
    mid_write = 0  # kills that left a new temp file: between its creation and its rename
    temp = path.with_name(f".state.json{TEMP_MARK}commit")
    deadline = time.monotonic() + 45
    while kills < 60 and time.monotonic() < deadline:
        start = state.read()["k"]
        temp_before = _inode(temp)
        rfd, wfd = os.pipe()
        proc = FORK.Process(target=_transact_for_ever, args=(str(path), wfd))
        proc.start()
        os.close(wfd)
        first = os.read(rfd, 64)  # it has begun its first transaction
        time.sleep(rng.uniform(0.0, 0.012))  # a transaction takes ~1-3 ms here
        assert proc.pid is not None
        os.kill(proc.pid, signal.SIGKILL)
        proc.join()
        assert proc.exitcode == -signal.SIGKILL
        kills += 1
        rest = first
        while chunk := os.read(rfd, 65536):
            rest += chunk
        os.close(rfd)
        begun = [int(x) for x in rest.split()]
        last_begun = begun[-1] if begun else start

        raw = path.read_bytes()
        data = json.loads(raw)  # always parses
        k = data["k"]
        assert k in (last_begun - 1, last_begun), (start, last_begun, k)
        assert raw == encode(content(k)), "neither the old nor the new content"
        progressed += k > start
        temp_now = _inode(temp)
        mid_write += temp_now is not None and temp_now != temp_before

        history = state.history()  # never broken by the kill
        log_lines = state.log_path.read_bytes().splitlines()
        assert all(json.loads(line) for line in log_lines), "a torn line in the log"
        newest = next(e for e in history if e.success)
        # logged after the commit: the kill may fall between the two
        assert newest.checksum in {
            "sha256:" + hashlib.sha256(encode(content(j))).hexdigest() for j in (k, k - 1)
        }
        for b in state.list_backups():
            assert b.path.read_bytes() == encode(content(state.load_backup(b)["k"]))
    assert kills >= 50
    assert progressed >= kills // 5, "rounds should commit something before the kill"
    assert mid_write >= 1, "some kills should land between a temp file's creation and its rename"
    # the next commit replaces the temp file a killed one left
    final = state.read()["k"] + 1
    state.write(content(final))
    assert not [p for p in tmp_path.rglob("*") if TEMP_MARK in p.name]
    # every content the file held is in the log once, in order: a writer
    # killed before logging its commit is logged by the next one ("external")
    logged = [e for e in reversed(state.history()) if e.success and e.changed]
    assert [e.checksum for e in logged] == [
        "sha256:" + hashlib.sha256(encode(content(j))).hexdigest() for j in range(final + 1)
    ]
    assert {e.operation for e in logged} <= {"write", "transaction", "external"}
