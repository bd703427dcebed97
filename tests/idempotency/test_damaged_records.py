"""@pipekit.idempotent and the manager over damaged records (issue 20 item
12): a record that parses but has the wrong shape, or a folder under a
record's name, reads as absent with one warning naming the file; the call
runs again and stores a good record in its place."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pipekit
import pytest
from pipekit import IdempotencyError, IdempotencyManager


def _folder(path: Path) -> None:
    path.unlink()
    (path / "inside").mkdir(parents=True)


def _edit(name: str, value: Any) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        doc = json.loads(path.read_text())
        doc[name] = value
        path.write_text(json.dumps(doc))

    return damage


DAMAGES = {
    "a folder": _folder,
    "expires is text": _edit("expires", "tomorrow"),
    "created is a list": _edit("created", [1]),
    "status unknown": _edit("status", 7),
    "owner is a number": _edit("owner", 12),
    "not an object": lambda path: path.write_text("[1, 2]"),
    "not JSON": lambda path: path.write_bytes(b"\0\0\x93garbage"),
}


@pytest.mark.parametrize("damage", DAMAGES.values(), ids=list(DAMAGES))
def test_the_decorator_runs_again_over_a_damaged_record(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: Callable[[Path], None]
) -> None:
    calls = []

    @pipekit.idempotent(store=tmp_path / "store")
    def charge(amount: int) -> int:
        calls.append(amount)
        return amount * 10

    assert charge(3) == 30
    [record] = (tmp_path / "store").glob("??/*.json")
    damage(record)

    caplog.set_level(logging.WARNING)
    assert charge(3) == 30
    assert calls == [3, 3]  # the damaged record read as absent: it ran again
    naming = [r for r in caplog.records if str(record) in r.getMessage()]
    assert len(naming) == 1 and "damaged" in naming[0].getMessage()

    assert charge(3) == 30  # a good record again: a hit
    assert calls == [3, 3]
    assert record.is_file()


def test_sweep_and_forget_set_a_folder_aside(tmp_path: Path) -> None:
    manager = IdempotencyManager(tmp_path / "store")
    for key in ("a", "b"):
        manager.complete(manager.begin(key, "fp"), 1)
        _folder(manager.store.path_for(key))
    assert manager.forget("a") is False  # no live record was there
    assert manager.sweep() == 1  # "b"
    for key in ("a", "b"):
        assert not manager.store.path_for(key).exists()
        assert len(list(manager.store.path_for(key).parent.glob("*.damaged-*"))) == 1
    manager.complete(manager.begin("b", "fp"), 2)
    assert manager.get("b").result == 2


def test_a_result_of_another_type_is_an_idempotency_error(tmp_path: Path) -> None:
    """A well-formed record whose result does not structure as the return
    type is no damage of the store: it says what to do."""

    @pipekit.idempotent(store=tmp_path / "store", operation="op")
    def one() -> int:
        return 1

    assert one() == 1
    [record] = (tmp_path / "store").glob("??/*.json")
    doc = json.loads(record.read_text())
    doc["result"] = {"not": "an int"}
    record.write_text(json.dumps(doc))
    with pytest.raises(IdempotencyError, match="does not read back as int"):
        one()
