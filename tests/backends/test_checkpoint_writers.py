"""Several processes saving to one checkpoint namespace at once (issue 20
item 4): every save that returns is durable, intact and in the index; and
temp files a SIGKILLed writer leaves in the store are swept and reported
(item 15)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

from pipekit import CheckpointManager
from pipekit._atomic import TEMP_MARK
from pipekit.stores._file_checkpoint import FileCheckpointStore

NS = "shared.ns"
WRITERS = 3
SAVES = 30

WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from pipekit.stores._file_checkpoint import FileCheckpointStore
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


KILLED = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from pipekit.stores._file_checkpoint import FileCheckpointStore
    from pipekit.checkpoints import CheckpointManager

    m = CheckpointManager(FileCheckpointStore(Path(sys.argv[1])), "shared.ns",
                          compression=None, deltas=False, retention={"keep_last": 2})
    big = bytes(range(256)) * (64 * 1024)  # 16 MiB: each put takes a while
    i = 0
    while True:
        m.save(big[i % 256:] + bytes([i % 256]), metadata={"i": i})
        if i == 0:
            print("saving", flush=True)
        i += 1
    """
)


def leftover_temps_of_a_killed_writer(root: Path) -> list[str]:
    """SIGKILL a process in the middle of its saves until it leaves temp
    files in the namespace: the kill comes as soon as a temp file is seen
    (a 16 MiB put takes a while, however fast the machine)."""
    folder = root / NS

    def temps() -> list[str]:
        return sorted(p.name for p in folder.iterdir() if TEMP_MARK in p.name)

    for _attempt in range(40):
        proc = subprocess.Popen(
            [sys.executable, "-c", KILLED, str(root)], stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "saving"
        deadline = time.monotonic() + 60
        while not temps() and time.monotonic() < deadline:
            time.sleep(0.001)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if temps():
            return temps()
    raise AssertionError("no kill landed inside a put in 40 tries")


def test_temp_files_a_killed_writer_left_are_reported_and_swept(tmp_path: Path) -> None:
    root = tmp_path / "store"
    temps = leftover_temps_of_a_killed_writer(root)
    store = FileCheckpointStore(root)
    manager = CheckpointManager(store, NS, compression=None, deltas=False)
    report = manager.verify()
    assert report.ok  # what the index names is intact
    assert report.temps == temps
    assert report.to_json()["temps"] == temps
    dry = manager.prune(dry_run=True)
    assert dry.temps == temps
    assert sorted(p.name for p in (root / NS).iterdir() if TEMP_MARK in p.name) == temps
    done = manager.prune()
    assert done.temps == temps and done.to_json()["temps"] == temps
    assert [p.name for p in (root / NS).iterdir() if TEMP_MARK in p.name] == []
    assert manager.verify().temps == []
    latest = manager.load()
    assert (
        isinstance(latest, bytes)
        and len(latest) == 16 * 1024 * 1024 - (manager.info().metadata["i"] % 256) + 1
    )


def test_the_first_save_of_a_manager_sweeps_leftover_temps(tmp_path: Path) -> None:
    root = tmp_path / "store"
    leftover_temps_of_a_killed_writer(root)
    manager = CheckpointManager(FileCheckpointStore(root), NS)
    manager.save({"after": True})
    assert [p.name for p in (root / NS).iterdir() if TEMP_MARK in p.name] == []
    assert manager.load() == {"after": True}


REDIS_WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from pipekit_redis.factories import checkpoint_store
    from pipekit.checkpoints import CheckpointManager

    url, prefix, writer, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
    store = checkpoint_store({"url": url, "prefix": prefix}, state_dir=Path("."))
    m = CheckpointManager(store, "shared.ns", delta_min_size=1024)
    while not go.exists():
        time.sleep(0.001)
    for i in range(30):
        state = {"writer": writer, "i": i, "items": [writer * 1000 + i + j for j in range(400)]}
        info = m.save(state, metadata={"writer": writer, "i": i})
        print(info.id, flush=True)
    """
)


def test_concurrent_writers_on_redis_lose_and_damage_nothing(
    tmp_path: Path, redis_server: Any
) -> None:
    from pipekit_redis.factories import checkpoint_store

    prefix = f"w{os.getpid()}:"
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", REDIS_WRITER, redis_server.url, prefix, str(w), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in range(WRITERS)
    ]
    time.sleep(0.5)
    go.touch()
    saved: list[str] = []
    for proc in procs:
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err
        saved += out.split()
    assert len(set(saved)) == WRITERS * SAVES, "two saves were given one id"
    store = checkpoint_store({"url": redis_server.url, "prefix": prefix}, state_dir=tmp_path)
    manager = CheckpointManager(store, NS)
    assert manager.verify().ok
    entries = manager.list()
    assert sorted(e.id for e in entries) == sorted(saved), "a save that returned is not indexed"
    for e in entries:
        assert manager.load(e.id) == expected(e.metadata["writer"], e.metadata["i"])
