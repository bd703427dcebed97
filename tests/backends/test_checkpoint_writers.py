"""Several processes saving to one checkpoint namespace at once (issue 20
item 4): every save that returns is durable, intact and in the index; and
temp files a SIGKILLed writer leaves in the store are swept and reported
(item 15)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

from pipekit import CheckpointManager
from pipekit.backends.file_checkpoint import FileCheckpointStore

NS = "shared.ns"
WRITERS = 3
SAVES = 30

WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from pipekit.backends.file_checkpoint import FileCheckpointStore
    from pipekit.checkpoints import CheckpointManager

    root, writer, go = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
    m = CheckpointManager(FileCheckpointStore(root), "shared.ns", delta_min_size=1024)
    while not go.exists():
        time.sleep(0.001)
    for i in range(30):
        state = {"writer": writer, "i": i, "items": [writer * 1000 + i + j for j in range(400)]}
        info = m.save(state, metadata={"writer": writer, "i": i})
        print(info.id, flush=True)
    """
)


def expected(writer: int, i: int) -> dict[str, object]:
    return {"writer": writer, "i": i, "items": [writer * 1000 + i + j for j in range(400)]}


def test_concurrent_writers_lose_and_damage_nothing(tmp_path: Path) -> None:
    root = tmp_path / "store"
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(root), str(w), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in range(WRITERS)
    ]
    time.sleep(0.5)  # let them all start and wait at the gate
    go.touch()
    saved: list[str] = []
    for proc in procs:
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err
        saved += out.split()
    assert len(saved) == WRITERS * SAVES
    assert len(set(saved)) == len(saved), "two saves were given one id"
    manager = CheckpointManager(FileCheckpointStore(root), NS)
    report = manager.verify()
    assert report.ok, report.to_json()
    entries = manager.list()
    assert sorted(e.id for e in entries) == sorted(saved), "a save that returned is not indexed"
    for e in entries:
        writer, i = e.metadata["writer"], e.metadata["i"]
        assert manager.load(e.id) == expected(writer, i)
    assert {(e.metadata["writer"], e.metadata["i"]) for e in entries} == {
        (w, i) for w in range(WRITERS) for i in range(SAVES)
    }
