"""Command starters: small helper processes that start the shell stage's
commands, so that the runner's scheduling thread does not.

``os.posix_spawn`` holds the GIL until the child has called ``exec``, and
on two busy cores the new child often waits for a CPU first (0.2 ms at the
median, over 1 ms in one start of ten here). The runner's scheduling
thread starts every shell stage, so it stood still for that long per
command. A starter (``python -I -S`` running :mod:`._execd`, standard
library only) waits for it instead, in a process of its own: the runner
writes one request and later reads one reply, about 60 µs of its time
(most of it the write that wakes the starter).
A thread instead of a process was measured and rejected: each GIL hand-off
between it and the scheduling thread cost more than the wait it saved.

A starter lives in the network namespace its commands must run in (see
:meth:`pipekit.IsolatedCommand.popen_starter`) and runs one command at a
time; idle starters are kept per namespace for the next command, and end
when the runner does (end of their stdin). The first few commands of a
namespace are started by the runner itself, so that a run of one or two
commands does not pay for starting Python once more. ``PIPEKIT_SHELL_STARTERS``
is ``auto`` (that), ``always`` (from the first command) or ``off``.
"""

from __future__ import annotations

import atexit
import marshal
import os
import struct
import subprocess
import sys
import threading
import weakref
from typing import Any

import pipekit

__all__ = ["Starter", "enabled", "give_back", "take"]

_LEN = struct.Struct("<I")


class Starter:
    """One starter process: requests go to its stdin, replies come on its
    stdout (4-byte length, then ``marshal``; see :mod:`._execd`). Each
    command asked for has a handle (anything with a ``result`` attribute,
    None until its reply came)."""

    def __init__(self, proc: subprocess.Popen[bytes], namespace: Any) -> None:
        assert proc.stdin is not None and proc.stdout is not None
        self.proc = proc
        # Weakly: a namespace no longer held by pipekit is one to leave.
        self._namespace = None if namespace is None else weakref.ref(namespace)
        self.key = id(namespace)
        self.w = proc.stdin.fileno()
        self.r = proc.stdout.fileno()
        os.set_blocking(self.r, False)
        self.env: Any = None  # the environment it holds (sent once while unchanged)
        self._buf = bytearray()
        self.broken = False
        self._ids = 0
        self.pending: dict[int, Any] = {}
        """Handles of the commands asked for whose reply has not come, by id."""
        self.idle = False
        """Among the idle starters (see :func:`give_back`)."""

    def run(
        self,
        handle: Any,
        cwd: str,
        env: dict[bytes, bytes],
        tries: list[Any],
        after: bool,
        count: bool,
    ) -> int:
        """Ask for a command (``after``: only if the one before it ends
        well); its id. ``handle.result`` is set when its reply comes."""
        same = env is self.env
        self.env = env
        self._ids += 1
        self._send(("run", self._ids, cwd, None if same else env, tries, after, count))
        handle.result = None
        self.pending[self._ids] = handle
        return self._ids

    def gone(self) -> bool:
        """Whether the namespace it lives in is no longer pipekit's."""
        return self._namespace is not None and self._namespace() is None

    def kill(self, command: int) -> None:
        """SIGKILL to the command's process group; not started if it waits."""
        self._ask(("kill", command))

    def drop(self, command: int) -> None:
        """Not started if it still waits (see :meth:`pump`)."""
        self._ask(("drop", command))

    def _ask(self, request: tuple[Any, ...]) -> None:
        try:
            self._send(request)
        except OSError:
            pass

    def pump(self) -> None:
        """Read the replies that came (call when :attr:`r` is readable) and
        hand each to its command's handle; if the starter ended, the first
        command waiting for a reply gets ``(None, None, 0, b"", message,
        None)`` and the ones queued behind it are not started."""
        while True:
            try:
                chunk = os.read(self.r, 1 << 17)
            except BlockingIOError:
                break
            if not chunk:
                # Commands run in the order asked for: only the first one
                # waiting for its reply can have been running; the others
                # never started.
                self.broken = True
                for i, command in enumerate(sorted(self.pending)):
                    error = "the command starter ended unexpectedly" if i == 0 else None
                    self.pending[command].result = (None, None, 0, b"", error, None)
                self.pending.clear()
                return
            self._buf += chunk
        while len(self._buf) >= 4:
            (n,) = _LEN.unpack_from(self._buf)
            if len(self._buf) < 4 + n:
                break
            value = marshal.loads(bytes(self._buf[4 : 4 + n]))
            del self._buf[: 4 + n]
            handle = self.pending.pop(value[0], None)
            if handle is not None:
                handle.result = tuple(value[1:])

    def _send(self, value: Any) -> None:
        data = marshal.dumps(value)
        data = _LEN.pack(len(data)) + data
        while data:
            data = data[os.write(self.w, data) :]

    def close(self) -> None:
        self.let_go()
        self.reap()

    def let_go(self) -> None:
        """Close its pipes: it ends at the end of its stdin."""
        for f in (self.proc.stdin, self.proc.stdout):
            if f is not None:
                try:
                    f.close()
                except OSError:
                    pass

    def reap(self) -> None:
        """Wait for it to end (after :meth:`let_go`)."""
        try:
            self.proc.wait(timeout=1)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


_idle: dict[int, list[Starter]] = {}
_all: list[Starter] = []
_lock = threading.Lock()
_HERE = os.path.dirname(os.path.abspath(__file__))
SERVER_ARGV = (
    sys.executable,
    "-I",
    "-S",
    "-c",
    f"import sys; sys.path.append({_HERE!r}); import _execd; _execd.main()",
)
"""How a starter is started: :mod:`._execd` imported by its file name (standard
library only, so ``-S``), not run as a script, so that its compiled bytecode
is used: compiling it took 3.5 ms of every starter's start."""


def mode() -> str:
    """``PIPEKIT_SHELL_STARTERS``: ``auto`` (the default: once a namespace
    has had :data:`USE_AFTER` commands), ``always`` (from the first
    command) or ``off`` (``0`` too); ``off`` elsewhere than Linux, where
    ``posix_spawn`` with ``setsid`` and pidfds may be missing."""
    if not sys.platform.startswith("linux"):
        return "off"
    value = os.environ.get("PIPEKIT_SHELL_STARTERS", "auto").strip().lower() or "auto"
    value = {"0": "off", "1": "always"}.get(value, value)
    if value not in ("auto", "always", "off"):
        raise ValueError(f"PIPEKIT_SHELL_STARTERS must be 'auto', 'always' or 'off', not {value!r}")
    return value


def enabled() -> bool:
    return mode() != "off"


WARM_AFTER = 2
"""Commands of a namespace started by the caller itself before a starter is
made for it (in the background: it takes about 20 ms to be ready)."""
USE_AFTER = 4
"""Commands of a namespace started by the caller itself before starters
start them: a run of a few commands (one changed input) would only pay for
starting Python once more."""

_seen: dict[int, int] = {}  # namespace -> commands asked for


def take(isolated: Any) -> Starter | None:
    """An idle starter living where ``isolated`` must run, started if none
    is idle; None while the namespace has had few commands yet, or if none
    can be started: the caller then starts the command itself."""
    namespace = isolated.namespace
    key = id(namespace)
    always = mode() == "always"
    with _lock:
        # Starters whose namespace was let go (its thread ended) end too.
        stale = [s for idle in _idle.values() for s in idle if s.gone()]
        for s in stale:
            _idle[s.key].remove(s)
            _all.remove(s)
            _seen.pop(s.key, None)
        seen = _seen[key] = _seen.get(key, 0) + 1
        if always:
            seen = USE_AFTER + 1
        idle = _idle.get(key)
        found = idle.pop() if seen > USE_AFTER and idle else None
        if found is not None:
            found.idle = False
    for s in stale:
        s.close()
    if found is not None:
        return found
    if seen == WARM_AFTER:
        warm = _start(namespace)
        if warm is not None:
            give_back(warm)
    if seen <= USE_AFTER:
        return None
    return _start(namespace)


def _start(namespace: Any) -> Starter | None:
    """A new starter in ``namespace`` (the current stage's, from its guard)."""
    try:
        iso = pipekit.isolate_command(list(SERVER_ARGV))
        if iso.namespace is not namespace:
            return None
        proc = iso.popen_starter(
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True, bufsize=0
        )
    except (OSError, ValueError, pipekit.NonRetryable):
        return None
    starter = Starter(proc, namespace)
    with _lock:
        if not _all:
            atexit.register(_close_all)
        _all.append(starter)
    return starter


def give_back(starter: Starter) -> None:
    """``starter`` has replied for every command asked of it and may start
    the next one."""
    with _lock:
        if starter.broken or starter.pending or starter.idle:
            return
        starter.idle = True
        _idle.setdefault(starter.key, []).append(starter)


def _close_all() -> None:
    with _lock:
        starters, _all[:] = list(_all), []
        _idle.clear()
    # All told at once, then waited for: they end side by side.
    for s in starters:
        s.let_go()
    for s in starters:
        s.reap()
