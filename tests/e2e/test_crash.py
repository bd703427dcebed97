"""SIGKILL at random instants: no partial file under an output's final name,
and the next run finishes the work and removes what the killed run left."""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

import pytest
from conftest import Project

CHUNK = lambda i: f"chunk {i:05d} ".encode() * 50 + b"\n"  # noqa: E731


def expected_output(chunks: int) -> bytes:
    return b"".join(CHUNK(i) for i in range(chunks))


def temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if ".pipekit-tmp-" in p.name and ".pipekit" not in p.parts]


def crash_pipeline(project: Project, chunks: int = 120, delay: float = 0.004) -> None:
    project.write("in.txt", "seed\n")
    stages = []
    for i in range(3):
        stages.append(
            {
                "name": f"write{i}",
                "uses": "slow-write",
                "inputs": ["in.txt"],
                "outputs": [f"out/w{i}.txt"],
                "params": {
                    "chunks": chunks,
                    "delay": delay,
                    "marker": str(project.root / f"started{i}"),
                },
            }
        )
    stages.append(
        {
            "name": "join",
            "uses": "concat",
            "inputs": [f"out/w{i}.txt" for i in range(3)],
            "outputs": ["out/all.txt"],
        }
    )
    project.pipeline(stages)


def assert_no_partial_outputs(project: Project, chunks: int) -> None:
    want = expected_output(chunks)
    for i in range(3):
        p = project.root / f"out/w{i}.txt"
        if p.exists():
            assert p.read_bytes() == want, f"partial file under final name {p}"
    allp = project.root / "out/all.txt"
    if allp.exists():
        assert allp.read_bytes() == want * 3


@pytest.mark.parametrize("sync", ["syncfs", "fsync"])
def test_sigkill_mid_write_never_exposes_a_partial_output(project: Project, sync: str) -> None:
    """With batched syncs (syncfs, Linux) and with per-file fsync."""
    env = project.env(PIPEKIT_SYNC=sync)
    chunks = 120
    crash_pipeline(project, chunks)
    rng = random.Random(1234)
    kills = 0
    for round_ in range(10):
        # after the first round, force every stage so each kill lands in a
        # run that is rewriting outputs which already exist
        force = ["--force", "all"] if round_ else []
        proc = project.popen("run", "--json", *force, env=env)
        # wait until some stage is writing, then kill at a random instant
        deadline = time.monotonic() + 20
        while not any((project.root / f"started{i}").exists() for i in range(3)):
            if proc.poll() is not None or time.monotonic() > deadline:
                break
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 1.3))  # the three writers take >= 1.44 s
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.communicate()
        assert_no_partial_outputs(project, chunks)
        for i in range(3):
            (project.root / f"started{i}").unlink(missing_ok=True)
    assert kills >= 7, "the kills should land while stages run"

    summary = project.run_json(env=env)
    assert summary["status"] == "ok"
    want = expected_output(chunks)
    for i in range(3):
        assert (project.root / f"out/w{i}.txt").read_bytes() == want
    assert (project.root / "out/all.txt").read_bytes() == want * 3
    assert temp_files(project.root) == [], "the completing run must remove killed runs' temp files"
    again = project.run_json(env=env)
    assert set(project.statuses(again).values()) == {"skipped"}


def test_killed_run_leaves_temp_file_that_next_run_removes(project: Project) -> None:
    crash_pipeline(project, chunks=400, delay=0.01)
    proc = project.popen("run")
    deadline = time.monotonic() + 20
    while not (project.root / "started0").exists():
        assert time.monotonic() < deadline
        time.sleep(0.005)
    time.sleep(0.3)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    left = temp_files(project.root)
    assert left, "a stage killed mid-write leaves its temp file"
    assert not (project.root / "out/w0.txt").exists()
    summary = project.run_json()
    assert summary["status"] == "ok"
    assert temp_files(project.root) == []
    assert (project.root / "out/w0.txt").read_bytes() == expected_output(400)


def test_killed_lock_holder_does_not_block_the_next_run(project: Project) -> None:
    project.write("in.txt", "x\n")
    marker = project.root / "started"
    project.pipeline(
        [
            {
                "name": "slow",
                "uses": "slow-write",
                "inputs": ["in.txt"],
                "outputs": ["out.txt"],
                "params": {"chunks": 1000, "delay": 0.01, "marker": str(marker)},
            }
        ]
    )
    proc = project.popen("run")
    deadline = time.monotonic() + 20
    while not marker.exists():
        assert time.monotonic() < deadline
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    # the lock file is still there, but the OS freed the lock with the process
    assert list((project.root / ".pipekit" / "locks").glob("*.lock"))
    project.pipeline(
        [
            {
                "name": "slow",
                "uses": "slow-write",
                "inputs": ["in.txt"],
                "outputs": ["out.txt"],
                "params": {"chunks": 5, "delay": 0.0, "marker": str(marker)},
            }
        ]
    )
    t0 = time.monotonic()
    summary = project.run_json("--lock-timeout", "5")
    assert summary["status"] == "ok"
    assert time.monotonic() - t0 < 5
