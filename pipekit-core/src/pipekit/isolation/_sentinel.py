"""Process groups that die with the runner, however it dies.

A command that a stage starts in a session of its own (``shell`` does, so
that a timeout can kill all it started) would outlive a runner killed with
SIGKILL, and go on writing into the stage's temporary outputs while the
next run works on the same stage. So the runner hands the id of each such
process group to a sentinel: a small process of its own whose standard
input is a pipe that only the runner holds. When the runner ends, the pipe
closes, and the sentinel kills every group it still watches. The runner
tells it when a group has ended, so that it never kills a group whose id
was reused.
"""

from __future__ import annotations

import subprocess
import sys
import threading

from ._guard import lifted as trusted

__all__ = ["watch_group", "forget_group"]

_SENTINEL = r"""
import os, signal, sys
groups = set()
for line in sys.stdin.buffer:
    word = line.strip()
    if word.startswith(b"-"):
        groups.discard(int(word[1:]))
    elif word:
        groups.add(int(word))
for group in groups:
    try:
        os.killpg(group, signal.SIGKILL)
    except OSError:
        pass
"""

_lock = threading.Lock()
_sentinel: subprocess.Popen[bytes] | None = None


def _tell(line: str) -> None:
    global _sentinel
    with _lock:
        if _sentinel is None or _sentinel.poll() is not None:
            # the runner's own process: the guard of the stage whose command
            # made it start lets it be
            with trusted():
                _sentinel = subprocess.Popen(
                    [sys.executable, "-I", "-S", "-c", _SENTINEL],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.DEVNULL,
                    start_new_session=True,  # a Ctrl-C of the runner's terminal spares it
                )
        assert _sentinel.stdin is not None
        _sentinel.stdin.write(line.encode() + b"\n")
        _sentinel.stdin.flush()


def watch_group(group: int) -> None:
    """Kill process group ``group`` when this process ends, unless
    :func:`forget_group` says it ended first."""
    _tell(str(group))


def forget_group(group: int) -> None:
    """Process group ``group`` has ended: no longer kill it."""
    if _sentinel is not None:
        _tell(f"-{group}")
