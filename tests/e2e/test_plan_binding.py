"""A stage that must run from a cached plan is bound cheaply: through its
plugin module's ``register_stages``, its config and params built as a full
load builds them (see ``tests/core/test_exact_structure.py``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from conftest import Project

PROBE = (
    "import json, sys, pipekit.cli; rc = pipekit.cli.main(['run', '--json']); "
    "sys.stderr.write(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
    "('cattrs', 'cattr', 'importlib') and m != 'importlib')) + '\\n'); sys.exit(rc)"
)


def _probe(project: Project) -> tuple[dict, list[str]]:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=project.root, env=project.env(),
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout), json.loads(proc.stderr.strip().splitlines()[-1])


def test_a_rerun_of_one_stage_from_a_cached_plan_needs_no_cattrs_nor_entry_points(
    project: Project,
) -> None:
    project.write("a.txt", "a\n")
    project.write("b.txt", "b\n")
    project.pipeline(
        [
            {"name": "sh", "uses": "shell", "inputs": ["a.txt"], "outputs": ["a.out"],
             "params": {"cmd": "tr a-z A-Z < {input} > {output}", "env": {"X": "1"}},
             "retry": {"attempts": 2, "backoff": 0.5}},
            {"name": "rep", "uses": "replace", "inputs": ["b.txt"], "outputs": ["b.out"],
             "params": {"pattern": "b", "replacement": "B"}},
        ]
    )
    os.utime(project.file, (time.time() - 10, time.time() - 10))
    project.run_json()  # caches the plan
    project.write("a.txt", "aa\n")
    project.write("b.txt", "bb\n")
    summary, modules = _probe(project)
    assert project.statuses(summary) == {"sh": "ok", "rep": "ok"}
    assert project.read("a.out") == "AA\n"
    assert project.read("b.out") == "BB\n"
    assert [m for m in modules if m.startswith("catt")] == [], modules
    assert "importlib.metadata" not in modules, modules


def _uses_cached_plan(project: Project) -> bool:
    proc = project.cli("run", "-vv")
    assert proc.returncode == 0, proc.stderr
    return "plan cache: using" in proc.stderr


def test_a_pipeline_file_just_written_gets_its_plan_cached_by_content(project: Project) -> None:
    """A plan made within 2 s of the file's change is cached with the
    SHA-256 of the bytes it was made from: the next run uses it at once, and
    an edit that keeps the file's size, mtime and inode is still seen."""
    project.write("in.txt", "abc\n")

    def pipeline(cmd: str) -> None:
        project.pipeline(
            [{"name": "s", "uses": "shell", "inputs": ["in.txt"], "outputs": ["out.txt"],
              "params": {"cmd": cmd}}]
        )

    pipeline("tr a-z A-Z < {input} > {output}")
    assert not _uses_cached_plan(project)  # first run: caches it
    assert _uses_cached_plan(project)  # within a second of the edit
    st = project.file.stat()
    # Same length, same mtime, same inode: only the content tells.
    with open(project.file, "r+b") as f:
        text = f.read()
        f.seek(0)
        f.write(text.replace(b"tr a-z A-Z", b"tr a-z B-Z"))
    os.utime(project.file, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert project.file.stat().st_size == st.st_size and project.file.stat().st_ino == st.st_ino
    assert not _uses_cached_plan(project)
    assert project.read("out.txt") == "BCD\n"  # the edited command ran


def test_a_stage_run_from_a_cached_plan_gets_its_inputs_as_paths(project: Project) -> None:
    """``ctx.inputs`` is a list of ``Path`` (DESIGN §2), whether the plan was
    loaded from the file or from the cache (which keeps paths as str): the
    test plugin's ``sleep`` calls ``ctx.inputs[0].read_bytes()``."""
    project.write("in.txt", "x\n")
    project.pipeline(
        [{"name": "s", "uses": "sleep", "inputs": ["in.txt"], "outputs": ["o.txt"],
          "params": {"seconds": 0}}]
    )
    os.utime(project.file, (time.time() - 10, time.time() - 10))  # old enough to cache by stat
    assert project.statuses(project.run_json()) == {"s": "ok"}  # caches the plan
    assert _uses_cached_plan(project)
    summary = project.run_json("--force", "all")
    assert project.statuses(summary) == {"s": "ok"}
    assert project.read("o.txt") == "x\n"


def test_a_rerun_right_after_the_first_decides_every_stage_without_its_processor(
    project: Project,
) -> None:
    """Files written within the hash cache's racy window (2 s) are not
    cached by their stat; a rerun then reads the small ones inline (a
    cheap decision), instead of locking each stage and binding its
    processor to decide it."""
    for i in range(3):
        project.write(f"in{i}.txt", f"{i}\n", age=0)  # just written
    project.pipeline(
        [{"name": f"s{i}", "uses": "shell", "inputs": [f"in{i}.txt"], "outputs": [f"out{i}.txt"],
          "params": {"cmd": "cp {input} {output}"}} for i in range(3)]
    )
    project.run_json()
    probe = (
        "import json, sys, pipekit.cli; rc = pipekit.cli.main(['run', '--json']); "
        "sys.stderr.write(json.dumps('pipekit_stages.shell' in sys.modules) + '\\n'); sys.exit(rc)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe], cwd=project.root, env=project.env(),
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert set(project.statuses(json.loads(proc.stdout)).values()) == {"skipped"}
    assert time.time() - (project.root / "in0.txt").stat().st_mtime < 2  # still in the window
    assert json.loads(proc.stderr.strip().splitlines()[-1]) is False, proc.stderr


@pytest.mark.parametrize(
    "content",
    [b"[]\n{}", b"[]", b'{"format": 7}', b"\x00\xff\n", b'{"format": 7, "file_sig": 3}\n[]', b""],
    ids=["list-head", "list-only", "no-newline", "binary", "list-body", "empty"],
)
def test_a_damaged_cached_plan_is_a_miss_not_a_crash(project: Project, content: bytes) -> None:
    """A cached plan that is not what pipekit writes (a torn copy, a file
    from elsewhere) is ignored and rewritten; a list where the head's table
    should be raised AttributeError out of the run before."""
    project.write("in.txt", "abc\n")
    project.pipeline(
        [{"name": "s", "uses": "shell", "inputs": ["in.txt"], "outputs": ["out.txt"],
          "params": {"cmd": "tr a-z A-Z < {input} > {output}"}}]
    )
    os.utime(project.file, (time.time() - 10, time.time() - 10))  # old enough to cache by stat
    assert not _uses_cached_plan(project)
    plans = list((project.root.parent / "cache" / "plans").glob("*.json"))
    assert len(plans) == 1
    plans[0].write_bytes(content)
    proc = project.cli("run", "-vv")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "plan cache: not used" in proc.stderr, proc.stderr
    assert _uses_cached_plan(project)  # written again by that run
    assert project.read("out.txt") == "ABC\n"
