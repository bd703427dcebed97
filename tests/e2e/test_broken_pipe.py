"""A reader of pipekit's stdout that goes away (``pipekit run | head -1``)
costs the output, never the run, and never a traceback."""

from __future__ import annotations

import subprocess
import sys

from conftest import Project


def _with_stdout_closed(project: Project, *args: str) -> subprocess.CompletedProcess[bytes]:
    """Run ``pipekit ARGS`` with a stdout pipe whose read end is closed at once."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipekit", *args],
        cwd=project.root,
        env=project.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    proc.stdout.close()
    _, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, b"", err)


def test_a_run_whose_stdout_reader_left_runs_every_stage(project: Project) -> None:
    project.write("in.txt", "x\n")
    project.pipeline(
        [
            {"name": f"s{i}", "uses": "upper", "inputs": ["in.txt"], "outputs": [f"o{i}.txt"]}
            for i in range(20)
        ]
    )
    done = _with_stdout_closed(project, "run")
    assert done.returncode == 0, done.stderr.decode()
    assert b"Traceback" not in done.stderr, done.stderr.decode()
    assert all((project.root / f"o{i}.txt").read_text() == "X\n" for i in range(20))
    assert set(project.statuses(project.run_json()).values()) == {"skipped"}  # all committed


def test_status_whose_stdout_reader_left_says_nothing_more(project: Project) -> None:
    project.write("in.txt", "x\n")
    project.pipeline([{"name": "s", "uses": "upper", "inputs": ["in.txt"], "outputs": ["o.txt"]}])
    done = _with_stdout_closed(project, "status")
    assert b"Traceback" not in done.stderr, done.stderr.decode()
    assert done.returncode in (0, 1)
