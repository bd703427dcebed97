"""PipelineState on real files: transactions, rollback, validation, backups,
corruption and restore, the transaction log, locks and their timeout messages."""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import attrs
import pipekit
import pytest
from pipekit import (
    LockTimeout,
    PipekitError,
    PipelineState,
    StateError,
    StateLockError,
    StateReadError,
    StateValidationError,
)
from pipekit._atomic import TEMP_MARK
from pipekit.errors import EXIT_LOCK
from pipekit.state._lock import HOST

# -- helpers ------------------------------------------------------------------


def snapshot(state: PipelineState) -> dict[str, Any]:
    """Every byte of the state file and its backups, and the inode of each."""
    files = {}
    for p in [state.path, *sorted(state.backup_dir.glob("*"))]:
        if p.exists():
            files[str(p)] = (p.read_bytes(), os.stat(p).st_ino)
    return files


def filled(tmp_path: Path, n: int = 3, **kw: Any) -> PipelineState:
    state = PipelineState(tmp_path / "state.json", **kw)
    for i in range(n):
        with state.transaction() as tx:
            tx.data["count"] = i
            tx.data.setdefault("items", []).append(f"item {i}")
    return state


def hold_lock(path: Path, *, shared: bool = False, seconds: float = 30) -> subprocess.Popen[str]:
    """A separate process holding the state's lock (a transaction, or a
    shared lock like a reader's) until killed; returns once it holds it."""
    code = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from pipekit.state._pipeline_state import PipelineState\n"
        "from pipekit.state._lock import StateLock\n"
        f"p = Path({str(path)!r})\n"
        f"if {shared!r}:\n"
        "    st = PipelineState(p)\n"
        "    lock = StateLock(st.lock_path, st.path, 5.0)\n"
        "    lock.acquire(exclusive=False)\n"
        "    print('held', flush=True)\n"
        f"    time.sleep({seconds})\n"
        "else:\n"
        "    with PipelineState(p).transaction() as tx:\n"
        "        print('held', flush=True)\n"
        f"        time.sleep({seconds})\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "held"
    return proc


# -- the basics ---------------------------------------------------------------


def test_public_names_and_error_hierarchy() -> None:
    for name in (
        "PipelineState",
        "StateError",
        "StateReadError",
        "StateValidationError",
        "StateLockError",
    ):
        assert name in pipekit.__all__
        assert getattr(pipekit, name) is not None
    for cls in (StateReadError, StateValidationError, StateLockError):
        assert issubclass(cls, StateError)
    assert issubclass(StateError, PipekitError)
    assert issubclass(StateLockError, LockTimeout)  # `except pipekit.LockTimeout` catches it
    assert StateLockError.exit_code == EXIT_LOCK == 3
    assert StateValidationError.exit_code == 2
    assert StateReadError.exit_code == 1


def test_missing_file_reads_as_empty_and_a_transaction_creates_it(tmp_path: Path) -> None:
    state = PipelineState(tmp_path / "sub" / "s.json")
    assert state.read() == {}
    assert not state.path.exists()
    with state.transaction() as tx:
        assert tx.data == {}
        tx.data["a"] = [1, 2.5, "x", None, True, {"b": "c"}]
    assert state.read() == {"a": [1, 2.5, "x", None, True, {"b": "c"}]}
    assert json.loads(state.path.read_text()) == state.read()
    assert state.list_backups() == []  # nothing to back up the first time
    (entry,) = state.history()
    assert entry.success and entry.changed and entry.operation == "transaction"


def test_data_is_a_deep_copy(tmp_path: Path) -> None:
    state = filled(tmp_path)
    first = state.read()
    first["items"].append("not saved")
    assert "not saved" not in state.read()["items"]
    with state.transaction() as tx:
        inner = tx.data["items"]
    inner.append("after the transaction")
    assert "after the transaction" not in state.read()["items"]


def test_replacing_data_and_write(tmp_path: Path) -> None:
    state = filled(tmp_path)
    with state.transaction() as tx:
        tx.data = {"fresh": 1}
    assert state.read() == {"fresh": 1}
    entry = state.write([1, 2, 3])  # any JSON value
    assert entry.operation == "write" and entry.success
    assert state.read() == [1, 2, 3]


def test_file_is_sorted_indented_json_with_a_final_newline(tmp_path: Path) -> None:
    state = PipelineState(tmp_path / "s.json")
    state.write({"b": 1, "a": {"d": 2, "c": 3}})
    assert state.path.read_text() == '{\n  "a": {\n    "c": 3,\n    "d": 2\n  },\n  "b": 1\n}\n'


def test_log_entry_fields(tmp_path: Path) -> None:
    state = filled(tmp_path, n=2)
    newest = state.history(1)[0]
    raw = state.path.read_bytes()
    assert newest.pid == os.getpid()
    assert newest.host == HOST
    assert abs(newest.time - time.time()) < 60
    assert newest.bytes == len(raw)
    assert newest.checksum == "sha256:" + hashlib.sha256(raw).hexdigest()
    assert newest.error is None
    assert newest.backup == state.list_backups()[0].name
    assert [e.time for e in state.history()] == sorted(
        (e.time for e in state.history()), reverse=True
    )
    line = json.loads(state.log_path.read_text().splitlines()[-1])
    assert {"time", "pid", "host", "operation", "success", "error", "bytes", "checksum"} <= set(
        line
    )


def test_unchanged_transaction_writes_nothing(tmp_path: Path) -> None:
    state = filled(tmp_path)
    before = snapshot(state)
    with state.transaction() as tx:
        tx.data["count"] = tx.data["count"]  # the same value
    assert snapshot(state) == before  # same bytes, same inodes: not rewritten
    newest = state.history(1)[0]
    assert newest.success and not newest.changed and newest.backup is None


# -- rollback -----------------------------------------------------------------


def test_rollback_leaves_file_backups_and_data_unchanged_and_logs_it(tmp_path: Path) -> None:
    state = filled(tmp_path, n=4)
    before = snapshot(state)
    data_before = state.read()
    log_lines = len(state.log_path.read_bytes().splitlines())

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        with state.transaction() as tx:
            tx.data["count"] = 999
            tx.data["items"].clear()
            raise Boom("changed my mind")
    assert snapshot(state) == before
    assert state.read() == data_before
    lines = state.log_path.read_bytes().splitlines()
    assert len(lines) == log_lines + 1
    failure = state.history(1)[0]
    assert failure.success is False
    assert failure.operation == "transaction"
    assert failure.error == "Boom: changed my mind"
    assert failure.bytes is None and failure.checksum is None
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "state.json",
        "state.json.backups",
        "state.json.history.jsonl",
        "state.json.lock",
    ]  # no temp file left


def test_keyboard_interrupt_in_a_transaction_rolls_back(tmp_path: Path) -> None:
    state = filled(tmp_path)
    before = snapshot(state)
    with pytest.raises(KeyboardInterrupt):
        with state.transaction() as tx:
            tx.data["count"] = -1
            raise KeyboardInterrupt
    assert snapshot(state) == before
    assert state.history(1)[0].error == "KeyboardInterrupt"


# -- validation ---------------------------------------------------------------


@attrs.define
class Retry:
    attempts: int = 1
    backoff: float = 0.5


@attrs.define
class Job:
    name: str
    retry: Retry = attrs.Factory(Retry)
    tags: list[str] = attrs.Factory(list)


@attrs.define
class Jobs:
    version: int
    jobs: dict[str, Job] = attrs.Factory(dict)


def test_attrs_schema_accepts_good_data(tmp_path: Path) -> None:
    state = PipelineState(tmp_path / "s.json", schema=Jobs)
    state.write({"version": 1, "jobs": {"a": {"name": "a", "retry": {"attempts": 3}}}})
    with state.transaction() as tx:
        tx.data["jobs"]["b"] = {"name": "b", "tags": ["x"]}
    assert set(state.read()["jobs"]) == {"a", "b"}


@pytest.mark.parametrize(
    ("bad", "path", "words"),
    [
        ({"jobs": {}}, "$.version", "required field missing"),
        ({"version": "1"}, "$.version", "expected an integer, got a string '1'"),
        (
            {"version": 1, "jobs": {"a": {"name": "a", "retry": {"attempts": "3"}}}},
            "$.jobs.a.retry.attempts",
            "expected an integer",
        ),
        (
            {"version": 1, "jobs": {"a": {"name": "a", "retyr": {}}}},
            "$.jobs.a.retyr",
            "did you mean 'retry'",
        ),
        (
            {"version": 1, "jobs": {"a": {"name": "a", "tags": ["ok", 7]}}},
            "$.jobs.a.tags[1]",
            "expected a string",
        ),
        ([1, 2], "$", "expected an object"),
    ],
)
def test_attrs_schema_failure_names_the_field_and_writes_nothing(
    tmp_path: Path, bad: Any, path: str, words: str
) -> None:
    state = PipelineState(tmp_path / "s.json", schema=Jobs)
    state.write({"version": 1})
    before = snapshot(state)
    with pytest.raises(StateValidationError) as info:
        with state.transaction() as tx:
            tx.data = bad
    assert snapshot(state) == before
    exc = info.value
    assert any(p == path and words in m for p, m in exc.problems), exc.problems
    shown = "the top level" if path == "$" else f"field {path[2:]!r}"
    assert shown in str(exc)
    assert "does not fit Jobs" in str(exc) and "Nothing was written" in str(exc)
    failure = state.history(1)[0]
    assert not failure.success and failure.error.startswith("StateValidationError: ")


def test_callable_schema(tmp_path: Path) -> None:
    class Invalid(ValueError):
        def __init__(self, message: str, path: list[Any]) -> None:
            super().__init__(message)
            self.path = path

    def check(data: Any) -> bool:
        if data.get("n", 0) < 0:
            raise Invalid("must be >= 0", ["counters", 2, "n"])
        return "forbidden" not in data

    state = PipelineState(tmp_path / "s.json", schema=check)
    state.write({"n": 1})
    with pytest.raises(StateValidationError) as info:
        state.write({"n": -1})
    assert "refused by test_callable_schema.<locals>.check" in str(info.value)
    assert "field 'counters[2].n': Invalid: must be >= 0" in str(info.value)
    assert info.value.problems == [("$.counters[2].n", "must be >= 0")]
    with pytest.raises(StateValidationError, match="returned False"):
        state.write({"forbidden": True})
    assert state.read() == {"n": 1}


@pytest.mark.parametrize(
    "value",
    [{1, 2}, datetime.datetime(2024, 1, 1), {1: "non-string key"}, object(), 2**70],
    ids=["set", "datetime", "int-key", "object", "huge-int"],
)
def test_data_that_is_not_plain_json_is_refused(tmp_path: Path, value: Any) -> None:
    state = PipelineState(tmp_path / "s.json")
    state.write({"ok": 1})
    with pytest.raises(StateValidationError, match="not plain JSON"):
        state.write({"v": value})
    assert state.read() == {"ok": 1}


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="max_backups"):
        PipelineState("x.json", max_backups=-1)
    with pytest.raises(ValueError, match="lock_timeout"):
        PipelineState("x.json", lock_timeout=-1)
    with pytest.raises(TypeError, match="schema"):
        PipelineState("x.json", schema={"type": "object"})  # type: ignore[arg-type]


# -- backups ------------------------------------------------------------------


def test_backups_hold_each_previous_content_and_rotate(tmp_path: Path) -> None:
    state = PipelineState(tmp_path / "s.json", max_backups=5)
    contents = []
    for i in range(12):
        state.write({"i": i})
        contents.append(state.path.read_bytes())
    backups = state.list_backups()
    assert len(backups) == 5
    # newest first: the content each write replaced
    assert [b.path.read_bytes() for b in backups] == contents[-2:-7:-1]
    assert [b.time for b in backups] == sorted((b.time for b in backups), reverse=True)
    assert state.list_backups(2) == backups[:2]
    assert state.load_backup(backups[0]) == {"i": 10}
    assert state.load_backup(backups[0].name) == {"i": 10}


def test_a_backup_is_a_hard_link_of_the_replaced_file_not_a_copy(tmp_path: Path) -> None:
    state = PipelineState(tmp_path / "s.json")
    state.write({"i": 0})
    inode = os.stat(state.path).st_ino
    state.write({"i": 1})
    assert os.stat(state.list_backups()[0].path).st_ino == inode
    assert os.stat(state.path).st_ino != inode  # the live file is a new file
    assert os.stat(state.path).st_nlink == 1  # editing it in place cannot touch a backup


def test_backups_are_copied_where_hard_links_fail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # fault injection: a file system without hard links (e.g. some FUSE or SMB mounts)
    def no_links(*_a: Any, **_k: Any) -> None:
        raise PermissionError(1, "Operation not permitted")

    state = PipelineState(tmp_path / "s.json")
    state.write({"i": 0})
    old = state.path.read_bytes()
    monkeypatch.setattr(os, "link", no_links)
    state.write({"i": 1})
    (backup,) = state.list_backups()
    assert backup.path.read_bytes() == old
    assert os.stat(backup.path).st_nlink == 1


def test_no_backups_when_turned_off(tmp_path: Path) -> None:
    state = PipelineState(tmp_path / "s.json", backup_before_write=False)
    for i in range(3):
        state.write({"i": i})
    assert not state.backup_dir.exists()
    assert state.list_backups() == []
    assert all(e.backup is None for e in state.history())


def test_file_permissions_are_kept(tmp_path: Path) -> None:
    state = PipelineState(tmp_path / "s.json")
    state.write({"secret": 1})
    os.chmod(state.path, 0o600)
    state.write({"secret": 2})
    assert os.stat(state.path).st_mode & 0o777 == 0o600


# -- corruption and restore -----------------------------------------------------


def test_damaged_file_is_reported_with_the_newest_backup_that_parses(tmp_path: Path) -> None:
    state = filled(tmp_path, n=3)
    good = state.read()
    state.path.write_text('{"count": 2, "items": [')  # edited by hand and cut short
    with pytest.raises(StateReadError) as info:
        state.read()
    message = str(info.value)
    newest = state.list_backups()[0]
    assert "is not valid JSON" in message
    assert str(newest.path) in message
    assert f"pipekit state restore --path {state.path}" in message
    assert info.value.backup == newest.path

    # a transaction refuses to start from it, and says so in the log
    before = snapshot(state)
    with pytest.raises(StateReadError):
        with state.transaction() as tx:
            tx.data["x"] = 1
    assert snapshot(state) == before
    assert not state.history(1)[0].success

    entry = state.restore_backup()
    assert state.read() == state.load_backup(newest) != good  # the state before the last write
    assert entry.operation == "restore" and entry.restored_from == str(newest.path)
    damaged = state.list_backups()[0]
    assert damaged.name == entry.backup
    assert damaged.path.read_text() == '{"count": 2, "items": ['  # kept, for a post-mortem


def test_restore_skips_backups_that_do_not_parse(tmp_path: Path) -> None:
    state = filled(tmp_path, n=2)
    v0 = state.load_backup(state.list_backups()[0])
    state.path.write_text("garbage")  # edited in place by hand
    state.write({"replaced": True})  # write() works on a damaged file: garbage is now a backup
    state.path.write_bytes(b"")  # and the file is now empty
    with pytest.raises(StateReadError, match="is empty") as info:
        state.read()
    assert state.list_backups()[0].path.read_text() == "garbage"
    assert info.value.backup == state.list_backups()[1].path  # skips the damaged newest
    state.restore_backup()
    assert state.read() == v0
    assert [b.path.read_bytes() for b in state.list_backups()][:2] == [b"", b"garbage"]


def test_no_good_backup(tmp_path: Path) -> None:
    state = PipelineState(tmp_path / "s.json")
    state.path.write_text("{")
    with pytest.raises(StateReadError, match="No backup of it parses"):
        state.read()
    with pytest.raises(StateError, match=r"no backup of .* to restore"):
        state.restore_backup()
    assert state.path.read_text() == "{"


def test_restore_errors(tmp_path: Path) -> None:
    state = filled(tmp_path, n=2)
    bad = tmp_path / "bad.json"
    bad.write_text("nope")
    with pytest.raises(StateReadError, match="is not valid JSON"):
        state.restore_backup(bad)
    with pytest.raises(StateReadError, match="cannot read backup"):
        state.restore_backup(tmp_path / "missing.json")
    other = tmp_path / "other.json"
    other.write_text('{"from": "elsewhere"}')
    state.restore_backup(other)  # any file that parses
    assert state.read() == {"from": "elsewhere"}
    strict = PipelineState(state.path, schema=Jobs)
    with pytest.raises(StateValidationError):
        strict.restore_backup(state.list_backups()[0])
    assert state.read() == {"from": "elsewhere"}


# -- the log ------------------------------------------------------------------


def test_history_skips_a_torn_last_line_and_the_next_entry_starts_a_new_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state = filled(tmp_path, n=2)
    with open(state.log_path, "ab") as fh:
        fh.write(b'{"time": 1.0, "pid": 1, "ho')  # a power loss mid-append
    with caplog.at_level(logging.DEBUG, logger="pipekit.state"):
        entries = state.history()
    assert len(entries) == 2
    assert "does not parse" in caplog.text
    state.write({"after": "the tear"})
    entries = state.history()
    assert len(entries) == 3 and entries[0].operation == "write"
    assert state.history(1) == entries[:1]
    assert state.history(0) == []


def test_history_reads_a_long_log_from_the_end(tmp_path: Path) -> None:
    state = PipelineState(tmp_path / "s.json", backup_before_write=False)
    state.write({"i": 0})
    line = state.log_path.read_bytes()
    with open(state.log_path, "ab") as fh:  # ~1 MB of older entries
        fh.write(line * 4000)
    state.write({"i": 1})
    assert len(state.history(3)) == 3
    assert len(state.history()) == 4002


# -- locks --------------------------------------------------------------------


def test_lock_timeout_names_the_holder_pid_and_host(tmp_path: Path) -> None:
    state = filled(tmp_path, n=1, lock_timeout=0.3)
    before = snapshot(state)
    holder = hold_lock(state.path)
    try:
        t0 = time.monotonic()
        with pytest.raises(StateLockError) as info:
            state.write({"x": 1})
        assert 0.25 < time.monotonic() - t0 < 5
        message = str(info.value)
        assert f"pid {holder.pid} on host {HOST}" in message
        assert "within 0.3s" in message and "Wait for it to finish" in message
        assert info.value.holder == f"pid {holder.pid} on host {HOST}"
        with pytest.raises(StateLockError):
            state.read()  # a reader waits for a transaction to end
    finally:
        holder.kill()
        holder.wait()
    assert snapshot(state) == before
    assert not state.history(1)[0].success
    state.write({"x": 2})  # the OS freed the killed holder's lock
    assert state.read() == {"x": 2}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/locks is Linux's")
def test_lock_timeout_names_readers_holding_the_shared_lock(tmp_path: Path) -> None:
    state = filled(tmp_path, n=1, lock_timeout=0.2)
    reader = hold_lock(state.path, shared=True)
    try:
        with pytest.raises(StateLockError) as info:
            state.write({"x": 1})
        assert f"readers: pid {reader.pid} on host {HOST}" in str(info.value)
        assert state.read()["count"] == 0  # readers share
    finally:
        reader.send_signal(signal.SIGKILL)
        reader.wait()


def test_nested_transaction_in_one_thread_fails_at_once(tmp_path: Path) -> None:
    state = filled(tmp_path, n=1)
    other = PipelineState(state.path)  # another instance on the same file
    t0 = time.monotonic()
    with state.transaction() as tx:
        tx.data["count"] = 42
        with pytest.raises(StateError, match="already open in this thread"):
            with other.transaction():
                pass
        assert other.read()["count"] == 0  # a read inside sees the committed content
    assert time.monotonic() - t0 < 2
    assert state.read()["count"] == 42


def test_threads_of_one_process_exclude_each_other(tmp_path: Path) -> None:
    state = PipelineState(tmp_path / "s.json", backup_before_write=False)

    def work() -> None:
        for _ in range(25):
            with state.transaction() as tx:
                tx.data["n"] = tx.data.get("n", 0) + 1

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert state.read() == {"n": 100}


def test_a_killed_writers_temp_file_is_replaced_by_the_next_commit(tmp_path: Path) -> None:
    state = filled(tmp_path, n=1)
    left = state.path.with_name(f".state.json{TEMP_MARK}commit")
    left.write_text('{"half": ')  # what a writer killed mid-commit leaves
    assert state.read() == {"count": 0, "items": ["item 0"]}
    state.write({"i": 1})
    assert not left.exists()
    assert [p.name for p in tmp_path.iterdir() if TEMP_MARK in p.name] == []


def test_writers_taking_turns_see_each_others_commits(tmp_path: Path) -> None:
    """Two instances (as two processes would): each notices the other's
    commits and backups, and no content goes unlogged."""
    a = PipelineState(tmp_path / "s.json", max_backups=4)
    b = PipelineState(tmp_path / "s.json", max_backups=4)
    for i in range(10):
        for who in (a, a, b):  # a twice in a row: its own commit is known to it
            with who.transaction() as tx:
                tx.data["n"] = tx.data.get("n", 0) + 1
                tx.data["last"] = i
    assert a.read()["n"] == 30
    backups = a.list_backups()
    assert len(backups) == 4
    assert [a.load_backup(x)["n"] for x in backups] == [29, 28, 27, 26]
    entries = a.history()
    assert len(entries) == 30 and {e.operation for e in entries} == {"transaction"}


def test_an_edit_by_hand_between_transactions_is_logged_as_external(tmp_path: Path) -> None:
    state = PipelineState(tmp_path / "s.json")
    state.write({"n": 1})
    time.sleep(0.01)
    state.path.write_text('{"n": 5}\n')  # in place, by hand
    state.write({"n": 6})
    newest, external, first = state.history()
    assert external.operation == "external" and external.pid is None
    assert external.checksum == "sha256:" + hashlib.sha256(b'{"n": 5}\n').hexdigest()
    assert newest.operation == "write" and first.operation == "write"
    assert state.load_backup(state.list_backups()[0]) == {"n": 5}  # and backed up


def test_backups_removed_by_hand_are_tolerated(tmp_path: Path) -> None:
    state = PipelineState(tmp_path / "s.json", max_backups=3)
    for i in range(5):
        state.write({"i": i})
    for b in state.list_backups():
        b.path.unlink()
    for i in range(5, 10):
        state.write({"i": i})
    assert [state.load_backup(b)["i"] for b in state.list_backups()] == [8, 7, 6]
