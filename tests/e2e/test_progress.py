"""Progress bars: drawn on a terminal, never on a pipe, never with -q/--json."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys

from conftest import Project


def slow_stage(project: Project) -> None:
    project.write("in.txt", "".join(f"line {i}\n" for i in range(40_000)))
    project.pipeline(
        [
            {
                "name": "slowup",
                "uses": "slow-upper",
                "inputs": ["in.txt"],
                "outputs": ["out.txt"],
                "params": {"sleep_every": 50, "sleep_s": 0.001},
            }
        ]
    )


def run_on_a_terminal(project: Project, *args: str) -> tuple[int, str, bytes]:
    """Run pipekit with stderr on a pseudo-terminal: (exit code, stdout, terminal bytes)."""
    master, slave = pty.openpty()
    env = project.env(TERM="xterm", COLUMNS="120")
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipekit", *args],
        cwd=project.root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=slave,
        stdin=subprocess.DEVNULL,
    )
    os.close(slave)
    seen = b""
    while True:
        ready, _, _ = select.select([master], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
        elif proc.poll() is not None:
            break
    os.close(master)
    out = proc.stdout.read().decode() if proc.stdout else ""
    proc.wait()
    return proc.returncode, out, seen


def test_a_terminal_shows_a_progress_bar_per_record_stage(project: Project) -> None:
    slow_stage(project)
    code, out, seen = run_on_a_terminal(project, "run")
    assert code == 0, seen
    assert b"slowup" in seen and b"records" in seen and b"rec/s" in seen, seen[-2000:]
    assert "ok       slowup" in out  # the per-stage lines still go to stdout


def test_no_progress_on_a_pipe_or_with_quiet_or_json(project: Project) -> None:
    slow_stage(project)
    proc = project.cli("run")
    assert proc.returncode == 0
    assert "rec/s" not in proc.stderr and "\x1b[" not in proc.stderr
    for flag in ("-q", "--json"):
        code, _out, seen = run_on_a_terminal(project, "run", "--force", "slowup", flag)
        assert code == 0, seen
        assert b"rec/s" not in seen and b"\x1b[" not in seen, seen[-500:]
