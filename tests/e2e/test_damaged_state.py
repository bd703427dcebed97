"""State that parses but has the wrong shape (issue 20 item 12): every record
pipekit reads back is checked; a damaged one reads as absent with one warning
naming its file, the run goes on (rerunning what the record stood for) and
heals it."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import Project

STATE = ".pipekit/state.json"
HASHES = ".pipekit/hashcache.json"
DEAD_LETTERS = ".pipekit/deadletters.sqlite"


def _copy_pipeline(project: Project) -> None:
    project.write("in.txt", "hello\n")
    project.pipeline([{"name": "cp", "uses": "copy", "inputs": ["in.txt"], "outputs": ["out.txt"]}])


def _record_pipeline(project: Project) -> None:
    project.write("in.txt", "ok\nfatal\nfine\n")
    project.pipeline(
        [
            {
                "name": "r",
                "uses": "record-fatal",
                "inputs": ["in.txt"],
                "outputs": ["out.txt"],
                "max_failures": 5,
                "params": {"calls": str(project.root / "calls.txt")},
            }
        ]
    )


def _write_json(path: Path, doc: Any) -> Path:
    path.write_text(json.dumps(doc))
    return path


def _make_folder(path: Path) -> Path:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink()
    (path / "inside").mkdir(parents=True)
    return path


def _idem_record(project: Project) -> Path:
    """The stage's idempotency record; state.json goes, so that the run asks
    the store (as on a runner that has no state of its own)."""
    (project.root / STATE).unlink()
    [record] = (project.root / ".pipekit/idempotency").glob("??/*.json")
    return record


def _edit_record(change: Callable[[dict[str, Any]], Any]) -> Callable[[Project], Path]:
    def damage(project: Project) -> Path:
        record = _idem_record(project)
        doc = json.loads(record.read_text())
        doc = change(doc) or doc
        return _write_json(record, doc)

    return damage


def _set(path: list[str], value: Any) -> Callable[[dict[str, Any]], None]:
    def change(doc: dict[str, Any]) -> None:
        for name in path[:-1]:
            doc = doc[name]
        doc[path[-1]] = value

    return change


DAMAGES: dict[str, Callable[[Project], Path]] = {
    "state entry is a number": lambda p: _write_json(p.root / STATE, {"stages": {"cp": 5}}),
    "state stages is a list": lambda p: _write_json(p.root / STATE, {"stages": [1, 2]}),
    "state entry outputs wrong": lambda p: _write_json(
        p.root / STATE, {"stages": {"cp": {"fingerprint": 3, "outputs": ["out.txt"]}}}
    ),
    "hash cache entries is a list": lambda p: _write_json(
        p.root / HASHES, {"v": 1, "entries": [1]}
    ),
    "hash cache entry is a number": lambda p: _write_json(
        p.root / HASHES, {"v": 1, "entries": {"in.txt": 5, "out.txt": [1, 2]}}
    ),
    "hash cache is a folder": lambda p: _make_folder(p.root / HASHES),
    "hash cache is a list": lambda p: _write_json(p.root / HASHES, [1, 2]),
    "state is a list": lambda p: _write_json(p.root / STATE, [1, 2]),
    "state is a folder": lambda p: _make_folder(p.root / STATE),
    "record result is a number": _edit_record(_set(["result"], 5)),
    "record outputs is a number": _edit_record(_set(["result", "outputs"], 5)),
    "record output digest is a number": _edit_record(_set(["result", "outputs", "out.txt"], 5)),
    "record expires is text": _edit_record(_set(["expires"], "soon")),
    "record created is a list": _edit_record(_set(["created"], [1])),
    "record is a list": _edit_record(lambda doc: [doc]),
    "record is a folder": lambda p: _make_folder(_idem_record(p)),
}


def _assert_one_warning(stderr: str, path: Path) -> None:
    assert "Traceback" not in stderr, stderr
    naming = [line for line in stderr.splitlines() if str(path) in line]
    assert len(naming) == 1, stderr
    assert "damaged" in naming[0], stderr


@pytest.mark.parametrize("damage", DAMAGES.values(), ids=list(DAMAGES))
def test_a_damaged_record_reads_as_absent_with_one_warning(
    project: Project, damage: Callable[[Project], Path]
) -> None:
    _copy_pipeline(project)
    project.run_json()
    damaged = damage(project)
    (project.root / "out.txt").unlink()  # what the run must make again

    proc = project.cli("run", "--json")
    assert proc.returncode == 0, proc.stderr
    _assert_one_warning(proc.stderr, damaged)
    assert project.read("out.txt") == "hello\n"

    healed = project.cli("run", "--json")  # the damage was replaced: no warning
    assert healed.returncode == 0, healed.stderr
    assert str(damaged) not in healed.stderr, healed.stderr
    assert project.statuses(json.loads(healed.stdout)) == {"cp": "skipped"}


@pytest.mark.parametrize("content", ["folder", "not a database"])
def test_a_damaged_dead_letter_database_is_moved_aside(project: Project, content: str) -> None:
    _record_pipeline(project)
    database = project.root / DEAD_LETTERS
    database.parent.mkdir()
    if content == "folder":
        (database / "inside").mkdir(parents=True)
    else:
        database.write_text("this is no SQLite database\n" * 10)

    listed = project.cli("dlq", "list")
    assert listed.returncode == 0, listed.stderr
    _assert_one_warning(listed.stderr, database)

    proc = project.cli("run", "--json")
    assert proc.returncode == 0, proc.stderr
    _assert_one_warning(proc.stderr, database)
    assert project.read("out.txt") == "ok\nfine\n"
    assert len(list(database.parent.glob("deadletters.sqlite.damaged-*"))) == 1

    listed = project.cli("dlq", "list")
    assert listed.returncode == 0 and "Traceback" not in listed.stderr, listed.stderr
    assert "fatal" in listed.stdout or "1 dead letter" in listed.stdout, listed.stdout


@pytest.mark.parametrize(
    "content",
    [{"pipeline": "proj", "stage": "r", "path": 5}, [1], "folder"],
    ids=["wrong types", "a list", "a folder"],
)
def test_a_damaged_retry_intent_is_moved_aside(project: Project, content: Any) -> None:
    _record_pipeline(project)
    intent = project.root / ".pipekit" / "dlq-retry" / "r.json"
    intent.parent.mkdir(parents=True)
    if content == "folder":
        (intent / "inside").mkdir(parents=True)
    else:
        _write_json(intent, content)
    proc = project.cli("dlq", "purge", "--stage", "r")
    assert proc.returncode == 0, proc.stderr
    _assert_one_warning(proc.stderr, intent)
    assert not intent.exists()
    assert len(list(intent.parent.glob("r.json.damaged-*"))) == 1
