"""A resumed record stage never trusts its partial output blindly (issue 20
items 3 and 8): bytes changed in it after a crash, or a partial name that a
symlink (or a hard link) was planted at, make the stage start over, saying
why, and never write through the planted name."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from conftest import Project

N = 30_000


def make_inputs(project: Project) -> bytes:
    data = "".join(f"line {i:06d} of the input\n" for i in range(N)).encode()
    project.write("in/a.txt", data)
    return data.upper()


def make_pipeline(project: Project) -> None:
    project.pipeline(
        [
            {
                "name": "up",
                "uses": "slow-upper",
                "inputs": ["in/a.txt"],
                "outputs": ["out/up.txt"],
                "params": {"sleep_every": 10, "sleep_s": 0.002},
                "checkpoint": {"every_records": 500},
            }
        ],
        backend={"name": "file"},
    )


def partials(project: Project) -> list[Path]:
    return sorted((project.root / "out").glob(".up.txt.pipekit-partial-*"))


def kill_after_a_checkpoint(project: Project, signum: int = signal.SIGKILL) -> Path:
    """Start a run, stop it with ``signum`` once a checkpoint past 1,000
    bytes of output is stored; return the partial output it left."""
    proc = project.popen("run")
    index = project.root / ".pipekit" / "checkpoints"
    deadline = time.monotonic() + 120
    try:
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"the run ended before it was killed: {proc.communicate()}")
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            found = list(index.glob("*/_index"))
            if found and any(p.stat().st_size > 1000 for p in partials(project)):
                time.sleep(0.2)  # a checkpoint or two more
                break
            time.sleep(0.01)
    finally:
        proc.send_signal(signum)
        proc.communicate()
    [partial] = partials(project)
    return partial


def test_bytes_changed_in_the_partial_output_make_the_stage_start_over(
    project: Project,
) -> None:
    want = make_inputs(project)
    make_pipeline(project)
    partial = kill_after_a_checkpoint(project)
    data = bytearray(partial.read_bytes())
    assert len(data) > 1000
    data[100:104] = b"XXXX"  # inside what any checkpoint (500 records) covers
    data[500] ^= 0xFF
    partial.write_bytes(bytes(data))
    proc = project.cli("run", "--json")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert (project.root / "out/up.txt").read_bytes() == want
    warned = [line for line in proc.stderr.splitlines() if "does not match" in line]
    assert len(warned) == 1, proc.stderr
    assert "starting from the beginning" in warned[0]
    records = json.loads(proc.stdout)["stages"][0]["records"]
    assert records["records_in"] == N and not records["resumed_from"]
    assert partials(project) == []


def test_an_intact_partial_output_is_resumed(project: Project) -> None:
    want = make_inputs(project)
    make_pipeline(project)
    kill_after_a_checkpoint(project)
    proc = project.cli("run", "--json")
    assert proc.returncode == 0, proc.stderr
    assert "does not match" not in proc.stderr
    assert json.loads(proc.stdout)["stages"][0]["records"]["resumed_from"] > 0
    assert (project.root / "out/up.txt").read_bytes() == want


def test_a_symlink_planted_at_the_partial_name_is_never_followed_on_resume(
    project: Project, tmp_path: Path
) -> None:
    want = make_inputs(project)
    make_pipeline(project)
    partial = kill_after_a_checkpoint(project, signal.SIGTERM)
    victim = tmp_path / "victim.txt"
    victim.write_bytes(partial.read_bytes())  # even the right bytes: a link is refused
    before = victim.read_bytes()
    partial.unlink()
    partial.symlink_to(victim)
    proc = project.cli("run", "--json")
    assert proc.returncode == 0, proc.stderr
    assert victim.read_bytes() == before
    out = project.root / "out/up.txt"
    assert not out.is_symlink() and out.read_bytes() == want
    assert "not a regular file" in proc.stderr, proc.stderr
    assert victim.exists() and not victim.is_symlink()


def test_a_symlink_planted_at_the_partial_name_is_never_followed_on_a_fresh_start(
    project: Project, tmp_path: Path
) -> None:
    want = make_inputs(project)
    make_pipeline(project)
    partial = kill_after_a_checkpoint(project, signal.SIGTERM)
    for folder in (project.root / ".pipekit" / "checkpoints").iterdir():
        for blob in folder.iterdir():
            blob.unlink()  # no checkpoint: the stage starts afresh
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    partial.unlink()
    partial.symlink_to(victim)
    proc = project.cli("run", "--json")
    assert proc.returncode == 0, proc.stderr
    assert victim.read_text() == "precious\n"
    out = project.root / "out/up.txt"
    assert not out.is_symlink() and out.read_bytes() == want


def test_a_hard_link_planted_at_the_partial_name_is_not_written_through(
    project: Project, tmp_path: Path
) -> None:
    want = make_inputs(project)
    make_pipeline(project)
    partial = kill_after_a_checkpoint(project, signal.SIGTERM)
    victim = project.root / "victim.txt"  # same file system: a hard link is possible
    victim.write_bytes(partial.read_bytes() + b"and the rest of a precious file\n")
    before = victim.read_bytes()
    partial.unlink()
    os.link(victim, partial)
    proc = project.cli("run", "--json")
    assert proc.returncode == 0, proc.stderr
    assert victim.read_bytes() == before
    assert (project.root / "out/up.txt").read_bytes() == want
