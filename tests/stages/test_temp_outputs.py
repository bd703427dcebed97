"""Temporary outputs nobody else can redirect (issue 20 item 8) and the
sweep of what killed runs leave (issue 20 items 15 and 12). Real runs,
real processes, real SIGKILLs."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import Project
from pipekit import _atomic as atomic
from pipekit._atomic import TEMP_MARK, temp_path_for, unlink_quietly

OUTPUTS = ["copy.out", "concat.out", "simple.out", "piped.out"]

# Runs pipekit in this very process after planting a symlink to the victim
# at every temp name it could predict for its outputs: the names of the old
# scheme, `.<out>.pipekit-tmp-<host>-<pid>-<n>`, for its own pid.
PLANTER = textwrap.dedent(
    """
    import os, re, sys
    victim, *outputs = sys.argv[1:]
    host = re.sub(r"[^A-Za-z0-9_.]", "_", os.uname().nodename)
    for out in outputs:
        for n in range(300):
            for tag in ("", "out-"):
                os.symlink(victim, f".{out}.pipekit-tmp-{tag}{host}-{os.getpid()}-{n}")
    sys.argv = ["pipekit", "run", "--json"]
    from pipekit.cli import entry
    entry()
    """
)


def test_planted_symlinks_at_predictable_temp_names_redirect_nothing(
    project: Project, tmp_path: Path
) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    project.write("in.txt", "abc\n")
    project.pipeline(
        [
            {"name": "copy", "uses": "copy", "inputs": ["in.txt"], "outputs": ["copy.out"]},
            {"name": "concat", "uses": "concat", "inputs": ["in.txt"], "outputs": ["concat.out"]},
            {
                "name": "simple",
                "uses": "shell",
                "inputs": ["in.txt"],
                "outputs": ["simple.out"],
                "params": {"cmd": "tr a-z A-Z < {input} > {output}"},
            },
            {
                "name": "piped",
                "uses": "shell",
                "inputs": ["in.txt"],
                "outputs": ["piped.out"],
                "params": {"cmd": "cat {input} | tr a-z A-Z > {output}"},
                "timeout": 60,
            },
        ]
    )
    proc = subprocess.run(
        [sys.executable, "-c", PLANTER, str(victim), *OUTPUTS],
        cwd=project.root,
        env=project.env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert victim.read_text() == "precious\n"
    assert proc.returncode == 0, proc.stderr
    assert set(project.statuses(json.loads(proc.stdout)).values()) == {"ok"}
    for name, text in zip(OUTPUTS, ["abc\n", "abc\n", "ABC\n", "ABC\n"]):
        out = project.root / name
        assert not out.is_symlink() and out.read_text() == text, name
    leftovers = [
        p.name for p in project.root.iterdir() if TEMP_MARK in p.name and not p.is_symlink()
    ]
    assert leftovers == []


def test_copy_never_writes_through_a_symlink_at_its_output(tmp_path: Path) -> None:
    import pipekit
    from pipekit_stages.files import Concat, Copy

    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    src = tmp_path / "in.txt"
    src.write_text("abc\n")
    dst = tmp_path / "out.txt"
    dst.symlink_to(victim)
    for processor in (Copy(), Concat()):
        ctx = pipekit.StageContext(
            stage_name="s",
            run_id="r",
            inputs=[src],
            outputs=[dst],
            params=None,
            log=logging.getLogger("test"),
        )
        with pytest.raises(OSError):
            processor.run(ctx)
    assert victim.read_text() == "precious\n"


def test_a_temp_path_is_in_a_private_folder_of_its_own(tmp_path: Path) -> None:
    final = tmp_path / "out.txt"
    first, second = temp_path_for(final), temp_path_for(final)
    assert first.parent != second.parent and first.parent.parent == tmp_path
    assert first.name == "out.txt" and not first.exists()
    assert stat.S_IMODE(first.parent.stat().st_mode) == 0o700
    first.write_text("new\n")
    atomic.move_into_place(first, final)
    assert final.read_text() == "new\n" and not first.parent.exists()
    second.write_text("discarded\n")
    unlink_quietly(second)
    assert not second.parent.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_a_runs_temp_paths_share_one_private_folder_per_output_folder(tmp_path: Path) -> None:
    folders = atomic.RunTempFolders()
    (tmp_path / "sub").mkdir()
    first, second = folders.path_for(tmp_path / "a.txt"), folders.path_for(tmp_path / "b.txt")
    elsewhere = folders.path_for(tmp_path / "sub" / "c.txt")
    assert first.parent == second.parent != elsewhere.parent
    assert first.parent.parent == tmp_path and first.name == "a.txt"
    assert stat.S_IMODE(first.parent.stat().st_mode) == 0o700
    first.write_text("new\n")
    atomic.move_into_place(first, tmp_path / "a.txt")
    unlink_quietly(second)  # a failed attempt's: the folder stays for the next stage
    assert first.parent.is_dir()
    # replaced by a folder others may write in: a new one of our own is made
    shutil.rmtree(first.parent)
    first.parent.mkdir(mode=0o777)
    first.parent.chmod(0o777)
    again = folders.path_for(tmp_path / "d.txt")
    assert again.parent != first.parent and again.parent.is_dir()
    shutil.rmtree(first.parent)
    (again.parent / "left.txt").write_text("a stage left it\n")
    folders.remove()
    assert again.parent.is_dir() and not elsewhere.parent.exists()


def test_a_run_leaves_no_temp_folder(project: Project) -> None:
    project.write("in.txt", "abc\n")
    stages = [
        {
            "name": f"s{i}",
            "uses": "shell",
            "inputs": ["in.txt"],
            "outputs": [f"out/{i}.txt"],
            "params": {"cmd": "tr a-z A-Z < {input} > {output}"},
        }
        for i in range(6)
    ]
    stages.append(
        {**stages[0], "name": "bad", "outputs": ["out/bad.txt"], "params": {"cmd": "exit 3"}}
    )
    project.pipeline(stages)
    proc = project.cli("run", "--keep-going", "--json")
    assert proc.returncode == 1, proc.stderr
    assert sorted(p.name for p in (project.root / "out").iterdir()) == [
        f"{i}.txt" for i in range(6)
    ]


def dead_pid() -> int:
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(proc.stdout)


def age(path: Path, seconds: float) -> None:
    """Date ``path`` and what is in it ``seconds`` back."""
    then = time.time() - seconds
    for p in [path, *(path.rglob("*") if path.is_dir() else [])]:
        os.utime(p, (then, then), follow_symlinks=False)


def test_the_sweep_keeps_live_writers_temps_and_takes_gone_ones(tmp_path: Path) -> None:
    host = atomic._HOST
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        names = {
            "dead_here": f"{TEMP_MARK}{host}-{dead_pid()}-abc",
            "live_here_old": f"{TEMP_MARK}{host}-{sleeper.pid}-abc",
            "other_host_fresh": f".o.txt{TEMP_MARK}elsewhere-{sleeper.pid}-abc",
            "other_host_old": f"{TEMP_MARK}elsewhere-{sleeper.pid}-def",
            "other_host_old_inside_fresh": f"{TEMP_MARK}elsewhere-{sleeper.pid}-ghi",
        }
        for key, name in names.items():
            (tmp_path / name).mkdir() if name.startswith(TEMP_MARK) else (tmp_path / name).touch()
            if name.startswith(TEMP_MARK):
                (tmp_path / name / "o.txt").write_text("partial\n")
            if key.endswith("old") or key.endswith("inside_fresh"):
                age(tmp_path / name, 2 * atomic.STALE_AFTER_S)
        (tmp_path / names["other_host_old_inside_fresh"] / "o.txt").write_text("still written\n")
        removed = atomic.sweep_temp_files([tmp_path])
        assert sorted(p.name for p in removed) == sorted(
            [names["dead_here"], names["other_host_old"]]
        )
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
            names[k] for k in ("live_here_old", "other_host_fresh", "other_host_old_inside_fresh")
        )
    finally:
        sleeper.kill()
        sleeper.wait()


def can_fake_another_host() -> bool:
    unshare = shutil.which("unshare")
    if unshare is None:
        return False
    probe = subprocess.run([unshare, "--uts", "hostname", "pipekit-test"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(not can_fake_another_host(), reason="needs unshare --uts (root)")
def test_temp_outputs_of_a_killed_runner_on_another_host_are_swept_once_old(
    project: Project, tmp_path: Path
) -> None:
    """A runner on another host sharing the folders (another UTS
    namespace: another host name) is SIGKILLed mid-stage. Its temp output
    stays while it could be another host's live work, and goes once
    nothing in it changed for a day (dated back with os.utime)."""
    pid_file = tmp_path / "command.pid"
    project.write("in.txt", "abc\n")
    project.pipeline(
        [
            {
                "name": "slow",
                "uses": "shell",
                "inputs": ["in.txt"],
                "outputs": ["out/slow.out"],
                "params": {
                    "cmd": f"echo partial > {{output}}; echo $$ > {pid_file}; exec sleep 60"
                },
            }
        ]
    )
    other = subprocess.Popen(
        [
            "unshare",
            "--uts",
            "sh",
            "-c",
            'hostname otherhost && exec "$@"',
            "sh",
            sys.executable,
            "-m",
            "pipekit",
            "run",
            "--json",
        ],
        cwd=project.root,
        env=project.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while not (pid_file.exists() and pid_file.read_text().strip()):
            assert other.poll() is None and time.monotonic() < deadline, other.communicate()
            time.sleep(0.05)
    finally:
        other.kill()
        other.communicate()
        os.kill(int(pid_file.read_text()), signal.SIGKILL)
    out = project.root / "out"
    (left,) = [p for p in out.iterdir() if TEMP_MARK in p.name]
    assert "otherhost" in left.name and (left / "slow.out").read_text() == "partial\n"
    (note,) = (project.root / ".pipekit" / "inflight").glob("otherhost-*.txt")

    project.pipeline(
        [
            {
                "name": "slow",
                "uses": "shell",
                "inputs": ["in.txt"],
                "outputs": ["out/slow.out"],
                "params": {"cmd": "cp {input} {output}"},
            }
        ]
    )
    assert project.statuses(project.run_json()) == {"slow": "ok"}
    assert left.exists() and note.exists()  # it may be another host's live work

    age(left, atomic.STALE_AFTER_S + 3600)
    age(note, atomic.STALE_AFTER_S + 3600)
    assert project.statuses(project.run_json()) == {"slow": "skipped"}
    assert not left.exists() and not note.exists()
    assert sorted(p.name for p in out.iterdir()) == ["slow.out"]


@pytest.mark.parametrize("damage", [b"\0" * 64, b"\xff\xfe" + bytes(range(256)) * 2])
def test_a_damaged_in_flight_note_reads_as_absent_with_one_warning(
    project: Project, damage: bytes
) -> None:
    project.write("in.txt", "abc\n")
    project.pipeline([{"name": "copy", "uses": "copy", "inputs": ["in.txt"], "outputs": ["o.txt"]}])
    note = project.root / ".pipekit" / "inflight" / f"{atomic._HOST}-{dead_pid()}.txt"
    note.parent.mkdir(parents=True)
    note.write_bytes(damage)  # what a torn write leaves
    proc = project.cli("run", "--json")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.count(str(note)) == 1, proc.stderr
    assert "damaged" in proc.stderr
    assert project.read("o.txt") == "abc\n" and not note.exists()
    again = project.cli("run", "--json")
    assert again.returncode == 0 and str(note) not in again.stderr
