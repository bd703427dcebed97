"""``ctx.checkpoint`` (``pipekit.Checkpoint``) on the CheckpointManager:
same public behaviour (save/load/clear, bound to the stage's fingerprint),
bounded history, pipekit 0.1's plain-JSON checkpoints still read; and the
runs that do not checkpoint never import the checkpoint machinery."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import Project
from pipekit import Checkpoint
from pipekit.plugins._processors import stage_namespace
from pipekit.stores._file_checkpoint import FileCheckpointStore

NS = "demo.stage"


def test_load_returns_only_what_was_saved_under_the_same_fingerprint(tmp_path: Path) -> None:
    store = FileCheckpointStore(tmp_path)
    assert Checkpoint(store, NS, "fp-a").load() is None
    Checkpoint(store, NS, "fp-a").save({"done": [1, 2]})
    assert Checkpoint(store, NS, "fp-a").load() == {"done": [1, 2]}
    assert Checkpoint(store, NS, "fp-b").load() is None  # inputs or params changed
    Checkpoint(store, NS, "fp-b").save(b"raw bytes")
    assert Checkpoint(store, NS, "fp-b").load() == b"raw bytes"
    assert Checkpoint(store, NS, "fp-a").load() is None


def test_frequent_saves_keep_only_the_newest(tmp_path: Path) -> None:
    store = FileCheckpointStore(tmp_path)
    cp = Checkpoint(store, NS, "fp")
    big = {f"k{i}": {"v": i, "pad": "x" * 40} for i in range(1000)}  # large enough for deltas
    for i in range(30):
        big["k1"]["v"] = i
        cp.save(big)
        assert len(store.list(NS)) <= 1 + 1 + 10  # index, newest, the chain it needs
    assert Checkpoint(store, NS, "fp").load() == big
    assert cp.manager.info().kind == "delta"
    small = Checkpoint(store, "demo.small", "fp")
    for i in range(30):
        small.save({"offset": i})
    assert sorted(store.list("demo.small")) == ["_index", "b-0000000030"]


def test_clear_removes_everything_it_saved(tmp_path: Path) -> None:
    store = FileCheckpointStore(tmp_path)
    cp = Checkpoint(store, NS, "fp")
    cp.clear()  # nothing saved: nothing to do
    cp.save({"a": 1})
    cp.save({"a": 2})
    cp.clear()
    assert store.list(NS) == []
    assert Checkpoint(store, NS, "fp").load() is None


def test_a_pipekit_0_1_checkpoint_is_no_longer_read(tmp_path: Path) -> None:
    store = FileCheckpointStore(tmp_path)
    store.put(NS, "stage", json.dumps({"fingerprint": "fp", "data": {"old": True}}).encode())
    assert Checkpoint(store, NS, "fp").load() is None
    Checkpoint(store, NS, "fp").save({"new": True})
    assert Checkpoint(store, NS, "fp").load() == {"new": True}


def test_a_damaged_checkpoint_is_not_loaded_and_the_stage_starts_over(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = FileCheckpointStore(tmp_path)
    cp = Checkpoint(store, NS, "fp")
    cp.save({"done": 1})
    blob = tmp_path / NS / "b-0000000001"
    blob.write_bytes(blob.read_bytes()[:-1] + b"!")
    assert Checkpoint(store, NS, "fp").load() is None
    assert "is damaged" in caplog.text and "starts without its checkpoint" in caplog.text
    Checkpoint(store, NS, "fp").save({"done": 2})  # and saving works again
    assert Checkpoint(store, NS, "fp").load() == {"done": 2}


def test_the_stage_namespace_is_safe_for_every_store() -> None:
    assert stage_namespace("demo", "copy") == "demo.copy"
    assert stage_namespace("my pipeline", "s/1") == "my_pipeline.s_1"


def test_runs_without_checkpoints_do_not_import_the_checkpoint_machinery(project: Project) -> None:
    project.write("in.txt", "x\n")
    project.pipeline([{"name": "u", "uses": "upper", "inputs": ["in.txt"], "outputs": ["o.txt"]}])
    code = (
        "import sys\n"
        "from pipekit.cli import main\n"
        "rc = main(['run', '-q'])\n"
        # (cryptography itself may come with redis-py, which portalocker
        # imports where it is installed: pipekit's own crypto must not)
        "heavy = ('zstandard', 'pipekit.checkpoints', 'pipekit.checkpoints.crypto')\n"
        "print(rc, [m for m in heavy if m in sys.modules])\n"
    )
    for _ in ("first run: the stage runs and commits", "no-op rerun"):
        proc = subprocess.run(
            [sys.executable, "-c", code],
            cwd=project.root,
            env=project.env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.stdout.strip() == "0 []", (proc.stdout, proc.stderr)
