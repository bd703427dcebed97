"""State, idempotency records, dead letters and the hash cache are created
0600 in 0700 folders whatever the umask (issue 20 item 10)."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Project
from pipekit import IdempotencyManager, PipelineState
from pipekit.state._hash_cache import HashCache
from pipekit.stores import DeadLetter
from pipekit.stores._file_dead_letters import FileDeadLetterStore


@pytest.fixture(params=[0o022, 0o000], ids=["umask 022", "umask 000"])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def _modes(root: Path) -> dict[str, str]:
    out = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder, name)
            out[str(path.relative_to(root))] = oct(stat.S_IMODE(path.lstat().st_mode))
    return out


def _letter() -> DeadLetter:
    now = time.time()
    return DeadLetter(
        pipeline="p",
        stage="s",
        fingerprint="fp",
        run_id="r",
        input="in.txt",
        input_index=0,
        offset=0,
        line=1,
        format="lines",
        record=b"x",
        error_type="E",
        message="m",
        traceback="t",
        attempts=1,
        first_failed=now,
        last_failed=now,
    )


def test_everything_kept_is_private(tmp_path: Path, umask: int) -> None:
    state_dir = tmp_path / "kept" / ".pipekit"
    state = PipelineState(state_dir / "state.json")
    state.write({"n": 1})
    with state.transaction() as tx:  # a backup, the log, the lock
        tx.data = {"n": 2}

    manager = IdempotencyManager(state_dir / "idempotency")
    manager.complete(manager.begin("a", "fp"), 1)
    manager.store.put_many([manager.store.get("a")])
    manager.forget("a")  # the generation file

    dead_letters = FileDeadLetterStore(state_dir / "deadletters.sqlite")
    dead_letters.add(_letter())
    dead_letters.close()

    (tmp_path / "in.txt").write_text("x")
    cache = HashCache(state_dir / "hashcache.json")
    cache.remember("in.txt", tmp_path / "in.txt", "0" * 64)
    cache.save()

    modes = _modes(tmp_path / "kept")
    assert {"state.json", "idempotency", "deadletters.sqlite", "hashcache.json"} <= {
        Path(name).name for name in modes
    }
    for name, mode in modes.items():
        path = tmp_path / "kept" / name
        assert mode == ("0o700" if path.is_dir() else "0o600"), (name, mode, modes)


def test_a_run_keeps_its_state_private(project: Project, umask: int) -> None:
    project.write("in.txt", "ok\nfatal\n")
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
    assert project.run_json()["status"] == "ok"  # one dead letter
    state_dir = project.root / ".pipekit"
    mine = [
        state_dir,
        state_dir / "idempotency",
        *state_dir.glob("state.json*"),
        *state_dir.glob("idempotency/**/*"),
        *state_dir.glob("deadletters.sqlite*"),
        state_dir / "hashcache.json",
        state_dir / "runs",
        *state_dir.glob("runs/*"),
    ]
    assert len(mine) >= 10, mine
    for path in mine:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), (path, oct(mode))
