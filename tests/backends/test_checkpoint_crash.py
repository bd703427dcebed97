"""SIGKILL during saves (with deltas, replaced ids, deletes and retention in
play) never leaves an index that names a missing or torn blob: after every
kill, every indexed checkpoint verifies and loads the state it was saved with."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from pipekit import CheckpointManager
from pipekit.stores._file_checkpoint import FileCheckpointStore

NS = "crash.ns"

GEN = textwrap.dedent(
    """
    def gen(i):
        items = {f"k{j}": {"v": j, "w": i if j % 50 == i % 50 else 0} for j in range(300)}
        state = {"i": i, "items": items}
        if i % 5 == 0:
            state["extra"] = list(range(i % 17))
        return state
    """
)

CHILD = GEN + textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from pipekit.stores._file_checkpoint import FileCheckpointStore
    from pipekit.checkpoints import CheckpointManager

    root, start = Path(sys.argv[1]), int(sys.argv[2])
    m = CheckpointManager(FileCheckpointStore(root), "crash.ns", retention={"keep_last": 4},
                          max_chain=3, delta_min_size=1024)
    print("ready", flush=True)
    i = start
    while True:
        kw = {}
        if i % 7 == 0:
            kw["id"] = f"named-{i % 3}"
        if i % 11 == 0:
            kw["full"] = True
        m.save(gen(i), metadata={"i": i}, **kw)
        print("saved", flush=True)
        if i % 13 == 0 and len(m.list()) > 2:
            m.delete(m.list()[1].id)
        i += 1
    """
)

ns: dict[str, Any] = {}
exec(GEN, ns)
gen = ns["gen"]


def check(root: Path) -> tuple[int, int]:
    """Everything indexed verifies and loads right; returns (checkpoints, deltas)."""
    store = FileCheckpointStore(root)
    m = CheckpointManager(store, NS)
    report = m.verify()
    assert report.index_problem is None, report.index_problem
    assert not report.damaged, report.damaged
    present = set(store.list(NS))
    entries = m.list(hidden=True)
    for e in entries:
        assert e.blob in present, e
    for e in m.list():
        assert m.load(e.id) == gen(e.metadata["i"]), e.id
    if entries:
        latest = m.load_info()
        assert not latest.skipped
        assert latest.state == gen(latest.info.metadata["i"])
    return len(entries), sum(1 for e in entries if e.kind == "delta")


def test_sigkill_during_saves_never_leaves_a_dangling_index(tmp_path: Path) -> None:
    root = tmp_path / "checkpoints"
    rng = random.Random(int(os.environ.get("PIPEKIT_CRASH_SEED", "6")))
    env = dict(os.environ)
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    deltas_seen = 0
    saves = 0
    for round in range(14):
        proc = subprocess.Popen(
            [sys.executable, str(script), str(root), str(round * 100_000)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read() if proc.stderr else ""
        # Kill after a random number of saves, then a random moment into the
        # next ones: counted in saves, not seconds, so that a slow machine
        # is not killed before it saved anything.
        for _ in range(rng.randint(1, 6)):
            assert proc.stdout.readline().strip() == "saved", (
                proc.stderr.read() if proc.stderr else ""
            )
        try:
            proc.wait(timeout=rng.uniform(0.0, 0.05))
        except subprocess.TimeoutExpired:
            pass
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL, proc.stderr.read() if proc.stderr else ""
        n, d = check(root)
        deltas_seen += d
        saves += n
    assert saves and deltas_seen, "the kills must land among saves that made deltas"
    # a save by a new manager sweeps what the kills left, and all still verifies
    m = CheckpointManager(FileCheckpointStore(root), NS, retention={"keep_last": 4})
    m.save(gen(7), metadata={"i": 7})
    report = m.verify()
    assert report.ok and not report.orphans, report
    check(root)
