"""A checkpoint gives back the value that was saved, or refuses it at save
(issue 20 item 16): a datetime, a UUID, a dataclass, an enum, a float that
JSON cannot hold would come back as something else, so the save fails with a
CheckpointStateError that names the type and where it is in the value, and
nothing is written."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import logging
import math
import uuid
from pathlib import Path
from typing import Any

import pytest
from pipekit import CheckpointManager
from pipekit.checkpoints import CheckpointStateError
from pipekit.engine._record_checkpoint import RecordCheckpoint
from pipekit.engine._records import RecordRun, partial_path_for, run_record_stage
from pipekit.plugins._processors import Checkpoint, RecordStage, StageContext
from pipekit.stores._file_checkpoint import FileCheckpointStore

NS = "values.ns"


@dataclasses.dataclass
class Point:
    x: int
    y: int


class Colour(enum.Enum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


REFUSED = [
    ({"when": dt.datetime(2026, 1, 2, 3, 4, 5)}, "datetime.datetime", "when"),
    ({"day": dt.date(2026, 1, 2)}, "datetime.date", "day"),
    ({"ids": [1, uuid.UUID(int=5)]}, "uuid.UUID", "ids[1]"),
    ({"a": {"b": [{"p": Point(1, 2)}]}}, "Point", "a.b[0].p"),
    ({"c": Colour.RED}, "Colour", "c"),
    ({"level": Level.HIGH}, "Level", "level"),
    ({"x": [0.5, math.nan]}, "nan", "x[1]"),
    ({"x": math.inf}, "inf", "x"),
    ({"odd key": {"k": dt.time(1, 2)}}, "datetime.time", "['odd key'].k"),
    ([dt.datetime(2026, 1, 1)], "datetime.datetime", "[0]"),
]


def store_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize("state,type_name,where", REFUSED, ids=[r[1] + "@" + r[2] for r in REFUSED])
def test_values_a_checkpoint_would_change_are_refused_before_anything_is_written(
    tmp_path: Path, state: Any, type_name: str, where: str
) -> None:
    root = tmp_path / "store"
    m = CheckpointManager(FileCheckpointStore(root), NS)
    with pytest.raises(CheckpointStateError) as caught:
        m.save(state)
    message = str(caught.value)
    assert type_name in message and where in message, message
    assert store_files(root) == []


def test_a_refused_value_in_a_later_delta_save_leaves_the_namespace_as_it_was(
    tmp_path: Path,
) -> None:
    root = tmp_path / "store"
    m = CheckpointManager(FileCheckpointStore(root), NS, delta_min_size=0)
    state: dict[str, Any] = {f"k{i:04d}": {"v": i} for i in range(500)}
    m.save(state)
    before = {name: (root / name).read_bytes() for name in store_files(root)}
    state["k0007"]["v"] = uuid.UUID(int=7)
    with pytest.raises(CheckpointStateError, match=r"uuid\.UUID.*k0007\.v|k0007\.v.*uuid\.UUID"):
        m.save(state)
    after = {name: (root / name).read_bytes() for name in store_files(root)}
    assert after == before
    state["k0007"]["v"] = 7
    m.save(state)
    assert CheckpointManager(FileCheckpointStore(root), NS).load() == state


def test_metadata_that_would_change_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "store"
    m = CheckpointManager(FileCheckpointStore(root), NS)
    with pytest.raises(CheckpointStateError, match=r"metadata.*datetime\.datetime"):
        m.save({"ok": 1}, metadata={"at": dt.datetime(2026, 1, 1)})
    assert store_files(root) == []


def test_a_whole_stage_checkpoint_refuses_a_datetime(tmp_path: Path) -> None:
    root = tmp_path / "store"
    checkpoint = Checkpoint(FileCheckpointStore(root), NS, "f" * 64)
    with pytest.raises(CheckpointStateError, match=r"started is a datetime\.datetime"):
        checkpoint.save({"started": dt.datetime(2026, 1, 1)})
    assert checkpoint.load() is None


def test_json_shaped_values_still_round_trip(tmp_path: Path) -> None:
    root = tmp_path / "store"
    state = {
        "s": "text \u2603",
        "i": -(2**63),
        "f": 0.1,
        "b": True,
        "n": None,
        "l": [1, [2, {"x": []}]],
        "big": 2**64 - 1,
    }
    CheckpointManager(FileCheckpointStore(root), NS).save(state)
    assert CheckpointManager(FileCheckpointStore(root), NS).load() == state


class KeepsWhen(RecordStage):
    """A stateful record processor whose state holds values JSON would change."""

    name = "t-keeps-when"

    def __init__(self, state: Any) -> None:
        self.state = state

    def checkpoint_state(self) -> Any:
        return self.state

    def restore_state(self, state: Any) -> None:
        pass

    def process(self, record: str, params: Any) -> Any:
        yield record


@pytest.mark.parametrize(
    "state,words",
    [
        ({"last": dt.datetime(2026, 1, 1)}, "$.last is a datetime.datetime"),
        ({"seen": {3: True}}, "has the key 3 (int); keys must be str"),
    ],
    ids=["datetime", "int-key"],
)
def test_a_record_processor_state_that_would_change_fails_the_stage_clearly(
    tmp_path: Path, state: Any, words: str
) -> None:
    source = tmp_path / "in.txt"
    source.write_text("".join(f"r{i}\n" for i in range(50)))
    partial = partial_path_for(tmp_path / "out.txt", "f" * 64)
    store = FileCheckpointStore(tmp_path / "checkpoints")
    ctx = StageContext(
        stage_name="s",
        run_id="r",
        inputs=[source],
        outputs=[partial],
        params=None,
        log=logging.getLogger("t"),
    )
    run = RecordRun(
        pipeline="p",
        stage="s",
        fingerprint="f" * 64,
        input_keys=["in.txt"],
        checkpoint=RecordCheckpoint(store, "p.s", "f" * 64),
        every_records=10,
    )
    with pytest.raises(CheckpointStateError) as caught:
        run_record_stage(KeepsWhen(state), ctx, run)
    assert words in str(caught.value) and "t-keeps-when" in str(caught.value)
    assert store.list("p.s") == []
