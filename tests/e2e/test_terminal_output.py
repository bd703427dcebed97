"""What ``pipekit run`` shows: on a terminal a live status line and coloured
``ok``/``failed`` (``NO_COLOR`` respected); on a pipe plain lines; a line
for a stage that runs long; ``-v`` shows each shell command (issue 26)."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys

from conftest import Project

# A colour in an SGR sequence: 30-37 or 90-97 (foreground), 38;... (256 or RGB).
COLOUR = re.compile(rb"\x1b\[(?:[0-9;]*;)?(?:3[0-8]|9[0-7])(?:;[0-9;]*)?m")


def on_a_terminal(project: Project, *args: str, **env: str) -> tuple[int, bytes]:
    """Run ``python -m pipekit ARGS`` with stdout and stderr on one
    pseudo-terminal: (exit code, everything it wrote there)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, *args],
        cwd=project.root,
        env=project.env(TERM="xterm", COLUMNS="120", **env),
        stdout=slave,
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
            except OSError:  # the other end is closed: all read
                break
            if not chunk:
                break
            seen += chunk
        elif proc.poll() is not None:
            break
    os.close(master)
    return proc.wait(), seen


def _pipeline(project: Project, first: str = "cp {input} {output}") -> None:
    project.write("in.txt", "one\n")
    project.pipeline(
        [
            {"name": "first", "uses": "shell", "inputs": ["in.txt"], "outputs": ["a.txt"],
             "params": {"cmd": first}},
            {"name": "second", "uses": "shell", "inputs": ["a.txt"], "outputs": ["b.txt"],
             "params": {"cmd": "cp {input} {output}"}},
        ]
    )  # fmt: skip


def test_a_terminal_shows_the_live_status_and_colours(project: Project) -> None:
    _pipeline(project)
    code, seen = on_a_terminal(project, "-m", "pipekit", "run")
    assert code == 0, seen
    # drawn as soon as the first stage starts
    assert b"0 of 2 stages done, 1 running: first" in seen, seen
    assert re.search(rb"\x1b\[[0-9;]*32m *ok", seen), seen
    assert COLOUR.search(seen)


def test_a_failure_is_red_on_a_terminal(project: Project) -> None:
    _pipeline(project, first="exit 3")
    code, seen = on_a_terminal(project, "-m", "pipekit", "run")
    assert code == 1, seen
    assert re.search(rb"\x1b\[[0-9;]*31m *failed", seen), seen


def test_no_colour_with_no_color(project: Project) -> None:
    _pipeline(project, first="exit 3")
    code, seen = on_a_terminal(project, "-m", "pipekit", "run", NO_COLOR="1")
    assert code == 1, seen
    assert b"failed" in seen and b"stages done" in seen
    assert not COLOUR.search(seen), seen


def test_no_display_and_no_colour_with_log_format_json_on_a_terminal(project: Project) -> None:
    _pipeline(project)
    code, seen = on_a_terminal(project, "-m", "pipekit", "--log-format", "json", "run")
    assert code == 0, seen
    assert b"stages done" not in seen
    assert b"ok       first" not in seen  # coloured, as it is a terminal
    assert b"ok" in seen


def test_a_pipe_gets_plain_lines(project: Project) -> None:
    _pipeline(project, first="exit 3")
    proc = project.cli("run", env=project.env(TERM="xterm", PIPEKIT_SHOW_RUNNING_AFTER="0"))
    assert proc.returncode == 1
    assert "\x1b[" not in proc.stdout + proc.stderr
    assert "stages done" not in proc.stdout + proc.stderr
    assert "  running  first" in proc.stdout
    assert "  failed   first" in proc.stdout


def test_a_line_when_a_long_stage_starts(project: Project) -> None:
    """A stage still running after PIPEKIT_SHOW_RUNNING_AFTER seconds (2 by
    default) gets a line; 0 gives every stage one as it starts."""
    _pipeline(project)
    everyone = project.cli("run", env=project.env(PIPEKIT_SHOW_RUNNING_AFTER="0"))
    assert everyone.returncode == 0, everyone.stderr
    assert "  running  first   ..." in everyone.stdout
    assert "  running  second  ..." in everyone.stdout
    lines = everyone.stdout.splitlines()
    assert lines.index("  running  first   ...") < next(
        i for i, line in enumerate(lines) if line.startswith("  ok       first")
    )
    none = project.cli("run", "--force", "all", env=project.env(PIPEKIT_SHOW_RUNNING_AFTER="3600"))
    assert none.returncode == 0, none.stderr
    assert "running" not in none.stdout
    _pipeline(project, first="sleep 4; cp {input} {output}")
    slow = project.cli("run")  # the default, 2 s
    assert slow.returncode == 0, slow.stderr
    assert "  running  first   ..." in slow.stdout
    bad = project.cli("run", env=project.env(PIPEKIT_SHOW_RUNNING_AFTER="soon"))
    assert bad.returncode == 2 and "PIPEKIT_SHOW_RUNNING_AFTER" in bad.stderr


def test_verbose_shows_each_shell_command(project: Project) -> None:
    _pipeline(project)
    quiet = project.cli("run")
    assert "$ cp" not in quiet.stderr
    loud = project.cli("run", "--force", "all", "-v")
    assert loud.returncode == 0, loud.stderr
    assert re.search(r"INFO: stage first: \$ cp \S*in\.txt ", loud.stderr), loud.stderr
    assert "INFO: stage second: $ cp " in loud.stderr


def test_a_no_op_rerun_on_a_terminal_does_not_import_rich(project: Project) -> None:
    _pipeline(project)
    assert project.cli("run").returncode == 0
    script = (
        "import sys; from pipekit.cli._main import main; code = main(['run']); "
        "print('RICH' if 'rich' in sys.modules else 'NO-RICH', code)"
    )
    code, seen = on_a_terminal(project, "-c", script)
    assert code == 0, seen
    assert b"NO-RICH 0" in seen, seen
