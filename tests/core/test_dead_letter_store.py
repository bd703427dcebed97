"""The file backend's dead-letter store (SQLite, WAL) against its protocol."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import attrs
from pipekit.stores import DeadLetter
from pipekit.stores._file_dead_letters import FileDeadLetterStore


def letter(
    offset: int, *, stage: str = "s", fp: str = "f1", index: int = 0, **kw: object
) -> DeadLetter:
    base = DeadLetter(
        pipeline="p",
        stage=stage,
        fingerprint=fp,
        run_id="r1",
        input="in.txt",
        input_index=index,
        offset=offset,
        line=offset + 1,
        format="lines",
        record=b"rec \xff " + str(offset).encode(),
        error_type="ValueError",
        message="bad",
        traceback="Traceback ...",
        attempts=3,
        first_failed=100.0,
        last_failed=101.0,
    )
    return attrs.evolve(base, **kw)  # type: ignore[arg-type]


def test_reading_an_absent_store_creates_nothing(tmp_path: Path) -> None:
    store = FileDeadLetterStore(tmp_path / "dl.sqlite")
    assert store.list("p") == [] and store.count("p") == 0 and store.get("p", 1) is None
    assert store.purge("p") == 0 and store.delete("p", [1]) == 0
    assert not (tmp_path / "dl.sqlite").exists()


def test_add_is_an_upsert_on_the_position(tmp_path: Path) -> None:
    store = FileDeadLetterStore(tmp_path / "dl.sqlite")
    first = store.add(letter(10))
    again = store.add(letter(10, run_id="r2", attempts=5, first_failed=200.0, last_failed=201.0))
    assert again == first
    [got] = store.list("p")
    assert (got.run_id, got.attempts, got.first_failed, got.last_failed) == ("r2", 5, 100.0, 201.0)
    assert got.record == b"rec \xff 10"  # raw bytes kept exactly
    other = store.add(letter(10, fp="f2"))
    assert other != first and store.count("p") == 2 and store.count("p", fingerprint="f2") == 1


def test_list_order_filters_and_purge_from_a_position(tmp_path: Path) -> None:
    store = FileDeadLetterStore(tmp_path / "dl.sqlite")
    for index, offset in ((1, 5), (0, 30), (0, 10), (1, 0)):
        store.add(letter(offset, index=index))
    store.add(letter(7, stage="t"))
    assert [(x.input_index, x.offset) for x in store.list("p", stage="s")] == [
        (0, 10),
        (0, 30),
        (1, 0),
        (1, 5),
    ]
    assert [x.stage for x in store.list("p", limit=1)] == ["s"]
    assert store.purge("p", stage="s", fingerprint="f1", from_position=(0, 30)) == 3
    assert [(x.input_index, x.offset) for x in store.list("p", stage="s")] == [(0, 10)]
    assert store.count("p") == 2 and store.count("other") == 0
    [t] = store.list("p", stage="t")
    assert store.get("p", int(t.id or 0)) == t and store.get("other", int(t.id or 0)) is None
    assert store.delete("p", [int(t.id or 0), 999]) == 1
    assert store.purge("p") == 1 and store.count("p") == 0


def test_the_database_is_in_wal_mode_and_survives_a_new_connection(tmp_path: Path) -> None:
    path = tmp_path / "dl.sqlite"
    store = FileDeadLetterStore(path)
    store.add(letter(1))
    conn = sqlite3.connect(str(path))
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    assert FileDeadLetterStore(path).count("p") == 1
    store.close()


def test_two_stores_on_one_file_do_not_lose_letters(tmp_path: Path) -> None:
    import threading

    path = tmp_path / "dl.sqlite"
    stores = [FileDeadLetterStore(path) for _ in range(3)]

    def add(i: int) -> None:
        for n in range(30):
            stores[i].add(letter(n, stage=f"s{i}"))

    threads = [threading.Thread(target=add, args=(i,)) for i in range(3)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert time.monotonic() - t0 < 60
    assert FileDeadLetterStore(path).count("p") == 90
