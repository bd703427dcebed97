"""A read-only file system, a read-only state folder and a full disk (issue
20 item 13): one line naming the path and the cause, exit 1, nothing
committed, and the next run after the storage is fixed heals.

These mount real file systems (a small tmpfs, a read-only bind mount), which
needs root (or CAP_SYS_ADMIN); where mounting is not permitted they skip,
saying why. chmod cannot stand in: it does not stop root."""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Project


def _mount(*args: str) -> None:
    proc = subprocess.run(["mount", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise PermissionError(proc.stderr.strip() or f"mount {' '.join(args)} failed")


def _umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


def _mounted(path: Path, *args: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    try:
        _mount(*args, str(path))
    except (PermissionError, FileNotFoundError) as exc:
        pytest.skip(f"cannot mount here (needs root or CAP_SYS_ADMIN): {exc}")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 3 MiB tmpfs of its own."""
    disk = tmp_path / "disk"
    _mounted(disk, "-t", "tmpfs", "-o", "size=3m,mode=0755", "tmpfs")
    try:
        yield disk
    finally:
        _umount(disk)


def _project_on(disk: Path) -> Project:
    root = disk / "proj"
    root.mkdir()
    project = Project(root)
    project.write("in.txt", "one\n")
    project.pipeline([{"name": "cp", "uses": "copy", "inputs": ["in.txt"], "outputs": ["out.txt"]}])
    assert project.run_json()["status"] == "ok"
    project.write("in.txt", "two\n")  # the next run has work to do
    return project


def _assert_one_line(proc: subprocess.CompletedProcess[str], *words: str) -> None:
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    for word in words:
        assert word in lines[0], lines[0]


def _assert_heals(project: Project) -> None:
    summary = project.run_json()
    assert project.statuses(summary) == {"cp": "ok"}
    assert project.read("out.txt") == "two\n"


def test_a_read_only_file_system(small_disk: Path) -> None:
    project = _project_on(small_disk)
    _mount("-o", "remount,ro", str(small_disk))
    try:
        proc = project.cli("run")
        _assert_one_line(proc, str(project.root / ".pipekit"), "Read-only file system")
        assert project.read("out.txt") == "one\n"  # nothing committed
    finally:
        _mount("-o", "remount,rw", str(small_disk))
    _assert_heals(project)


def test_a_read_only_state_folder(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    root.mkdir()
    project = Project(root)
    project.write("in.txt", "one\n")
    project.pipeline([{"name": "cp", "uses": "copy", "inputs": ["in.txt"], "outputs": ["out.txt"]}])
    assert project.run_json()["status"] == "ok"
    project.write("in.txt", "two\n")
    state_dir = root / ".pipekit"
    _mounted(state_dir, "--bind", str(state_dir))
    try:
        _mount("-o", "remount,bind,ro", str(state_dir))
        proc = project.cli("run")
        _assert_one_line(proc, str(state_dir), "Read-only file system")
        assert project.read("out.txt") == "one\n"  # no output replaced without its record
    finally:
        _umount(state_dir)
    _assert_heals(project)


def _fill(disk: Path) -> Path:
    filler = disk / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def test_a_full_disk(small_disk: Path) -> None:
    project = _project_on(small_disk)
    filler = _fill(small_disk)
    proc = project.cli("run")
    _assert_one_line(proc, str(project.root / ".pipekit"), "No space left on device")
    assert project.read("out.txt") == "one\n"
    os.unlink(filler)
    _assert_heals(project)
