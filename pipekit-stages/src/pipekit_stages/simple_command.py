"""Running a simple command without ``/bin/sh``, as GNU make does.

Starting ``/bin/sh -c`` for ``tr a-z A-Z < in > out`` costs a second
``exec`` and a shell start-up, as much CPU as the command itself. When a
command is *simple* (plain words and the redirections ``<``, ``>`` and
``>>``), pipekit opens the redirections and executes the program itself,
with exactly the effect the shell would have. Anything else (a variable, a
glob, a pipe, a quote other than single quotes, a shell builtin or keyword)
goes to ``/bin/sh -c`` as before, and so does a simple command that cannot
be started (a program not found on ``PATH``, not executable, or a script
without ``#!``), so that the shell reports it in its own words or runs it as
a script. ``PIPEKIT_SHELL=always`` sends every command to the shell.

The test is deliberately narrow: a command is simple only when no shell
would read it differently. ``tests/stages/test_simple_command.py`` checks
the words against what ``/bin/sh`` itself passes to a program.
"""

from __future__ import annotations

import os
from typing import NamedTuple

__all__ = ["SimpleCommand", "open_redirects", "parse", "shell_mode"]

# Characters that no POSIX shell treats specially outside quotes (the set
# shlex.quote leaves bare, ASCII only).
_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_@%+=:,./-")
_BLANK = " \t"

# Names the shell runs itself (POSIX special and regular built-ins, dash's
# and bash's common ones) and reserved words: these go to the shell, since a
# program of the same name (/usr/bin/echo, /usr/bin/[) may behave otherwise.
SHELL_NAMES = frozenset(
    """
    ! { } [[ ]] case do done elif else esac fi for function if in select then time until while
    . : [ alias bg break builtin cd chdir command continue declare echo eval exec exit export
    false fc fg getopts hash jobs kill let local printf pwd read readonly return set shift
    source test times trap true type typeset ulimit umask unalias unset wait
    """.split()  # noqa: SIM905 (a word list reads better than 70 quoted strings)
)


class SimpleCommand(NamedTuple):
    """A command's words and its redirections, in the order written."""

    words: list[str]
    redirects: list[tuple[str, str]]
    """``(op, path)`` with op ``<``, ``>`` or ``>>``."""


def shell_mode() -> str:
    """``auto`` (simple commands without the shell) or ``always``; a
    ValueError saying what is allowed for anything else."""
    mode = os.environ.get("PIPEKIT_SHELL", "auto").strip().lower() or "auto"
    if mode not in ("auto", "always"):
        raise ValueError(f"PIPEKIT_SHELL must be 'auto' or 'always', not {mode!r}")
    return mode


def parse(command: str) -> SimpleCommand | None:
    """The command as words and redirections, or None when it is not simple
    (the shell must read it)."""
    words: list[str] = []
    redirects: list[tuple[str, str]] = []
    pending: str | None = None  # a redirection waiting for its target
    i, n = 0, len(command)
    while i < n:
        c = command[i]
        if c in _BLANK:
            i += 1
            continue
        if c == "<" or c == ">":
            if pending is not None:
                return None
            nxt = command[i + 1 : i + 2]
            if c == "<":
                if nxt in ("<", ">", "&", "|"):
                    return None  # here-document, <>, <&
                pending, i = "<", i + 1
            elif nxt == ">":
                pending, i = ">>", i + 2
            elif nxt in ("&", "|", "("):
                return None  # >&, >|
            else:
                pending, i = ">", i + 1
            continue
        parts: list[str] = []
        while i < n:
            c = command[i]
            if c in _SAFE:
                j = i + 1
                while j < n and command[j] in _SAFE:
                    j += 1
                parts.append(command[i:j])
                i = j
            elif c == "'":
                j = command.find("'", i + 1)
                if j < 0:
                    return None
                parts.append(command[i + 1 : j])
                i = j + 1
            elif c in _BLANK:
                break
            else:  # `2>x` (a descriptor number), `a>b`, $ ` " \ ; & | ( ) * ? [ ] # ~ ...
                return None
        word = "".join(parts)
        if pending is not None:
            if not word:
                return None
            redirects.append((pending, word))
            pending = None
        else:
            words.append(word)
    if pending is not None or not words:
        return None
    name = words[0]
    if not name or "=" in name or name in SHELL_NAMES:
        return None  # an assignment, a builtin or a reserved word
    return SimpleCommand(words, redirects)


_OPEN_FLAGS = {
    "<": os.O_RDONLY,
    ">": os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
    ">>": os.O_WRONLY | os.O_CREAT | os.O_APPEND,
}
"""The ``open`` flags of each redirection operator, as the shell opens it."""


def open_redirects(redirects: list[tuple[str, str]], cwd: str) -> dict[int, int]:
    """Open the redirections left to right as the shell does; return the
    file descriptor for stdin (0) and stdout (1). The caller closes them.
    On an error, what was opened is closed and the error raised."""
    fds: dict[int, int] = {}
    opened: list[int] = []
    try:
        for op, target in redirects:
            path = os.path.join(cwd, target)  # an absolute target stays itself
            fd = os.open(path, _OPEN_FLAGS[op] | os.O_CLOEXEC, 0o666)
            opened.append(fd)
            fds[0 if op == "<" else 1] = fd
    except BaseException:
        for fd in opened:
            os.close(fd)
        raise
    # An earlier redirection of the same descriptor was opened (and
    # truncated) as the shell would, then replaced: close it now.
    for fd in opened:
        if fd not in fds.values():
            os.close(fd)
    return fds
