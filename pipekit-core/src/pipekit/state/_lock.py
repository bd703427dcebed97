"""The lock of a :class:`~pipekit.PipelineState` file.

A sibling ``<name>.lock`` holding an OS lock (portalocker: ``flock`` on
POSIX), which the OS frees when its holder dies: exclusive for a transaction,
shared for a read. The exclusive holder writes ``pid P on host H`` into the
file so that a timeout can say who is in the way; on Linux, ``/proc/locks``
also names the pids holding it now (readers included).
"""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path
from typing import Any

from .._atomic import overwrite_line
from .._private_files import FILE_MODE, make_private_dir
from ..errors import StateLockError

__all__ = ["StateLock", "HOST"]

HOST = os.uname().nodename if hasattr(os, "uname") else "localhost"
_RECORD_RE = re.compile(r"pid (\d+) on host (\S+)")


class StateLock:
    """One acquisition of the lock file ``path`` guarding ``state_path``."""

    def __init__(self, path: Path, state_path: Path, timeout: float | None) -> None:
        self.path = path
        self.state_path = state_path
        self.timeout = timeout
        self._fh: Any = None

    def acquire(self, *, exclusive: bool) -> None:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, FILE_MODE)
        except FileNotFoundError:
            make_private_dir(self.path.parent)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, FILE_MODE)
        except PermissionError:
            if exclusive:
                raise
            fd = os.open(self.path, os.O_RDONLY)  # another user's lock file: a read may share it
        fh = os.fdopen(fd, "r+b" if exclusive else "rb", buffering=0)
        try:
            if self.timeout is None:
                _lock(fh, exclusive, block=True)
            else:
                self._poll(fh, exclusive)
        except BaseException:
            fh.close()
            raise
        if exclusive:
            overwrite_line(fd, f"pid {os.getpid()} on host {HOST}")
        self._fh = fh

    def _poll(self, fh: Any, exclusive: bool) -> None:
        assert self.timeout is not None
        deadline = time.monotonic() + self.timeout
        delay = 0.0005
        while not _lock(fh, exclusive, block=False):
            left = deadline - time.monotonic()
            if left <= 0:
                holder = describe_holder(self.path, fh.fileno())
                who = f"held by {holder}" if holder else "held by another process"
                raise StateLockError(
                    f"could not lock {self.state_path} within {self.timeout:g}s: {who}. "
                    "Wait for it to finish (or stop it), or allow a longer lock timeout",
                    path=self.state_path,
                    holder=holder,
                ) from None
            # short sleeps: under contention the lock changes hands every
            # millisecond or so, and a long sleep would leave it idle
            time.sleep(min(delay, left))
            delay = min(delay * 2, 0.01)

    def release(self) -> None:
        fh, self._fh = self._fh, None
        if fh is None:
            return
        try:
            import portalocker  # deferred: see _lock

            portalocker.unlock(fh)
        finally:
            fh.close()


def _lock(fh: Any, exclusive: bool, *, block: bool) -> bool:
    """Take the OS lock on ``fh``; False when it is held and ``block`` is False."""
    import portalocker  # deferred: it imports redis-py and importlib.metadata

    flags = portalocker.LOCK_EX if exclusive else portalocker.LOCK_SH
    try:
        portalocker.lock(fh, flags if block else flags | portalocker.LOCK_NB)
    except portalocker.LockException:
        return False
    return True


def describe_holder(path: Path, fd: int | None = None) -> str | None:
    """Who holds the lock file ``path``: ``pid P on host H``, from what the
    last exclusive holder recorded and, on Linux, from ``/proc/locks``."""
    recorded: tuple[int, str] | None = None
    try:
        m = _RECORD_RE.search(path.read_text(errors="replace"))
        if m:
            recorded = (int(m.group(1)), m.group(2))
    except OSError:
        pass
    live = _linux_holders(path, fd)
    if live is None:  # the OS does not tell: trust the record
        return f"pid {recorded[0]} on host {recorded[1]}" if recorded else None
    writers = [pid for pid, kind in live if kind == "WRITE"]
    readers = [pid for pid, kind in live if kind != "WRITE"]
    me = os.getpid()

    def label(pid: int) -> str:
        return f"pid {pid} on host {HOST}" + (" (this process)" if pid == me else "")

    if writers:
        return label(writers[0])
    if readers:
        return "readers: " + ", ".join(label(p) for p in sorted(set(readers)))
    if recorded and recorded[1] != HOST:
        # a holder on another machine (a shared file system): only its record names it
        return f"pid {recorded[0]} on host {recorded[1]}"
    return None


def _linux_holders(path: Path, fd: int | None) -> list[tuple[int, str]] | None:
    """(pid, READ|WRITE) of every flock on ``path`` per ``/proc/locks``;
    None where there is no such file."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        st = os.fstat(fd) if fd is not None else os.stat(path)
        with open("/proc/locks", encoding="ascii", errors="replace") as fh:
            lines = fh.readlines()
    except OSError:
        return None
    want = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    # "1: FLOCK  ADVISORY  WRITE 1234 fe:00:1474572 0 EOF"; a waiter's line has "->" before FLOCK
    rows = (line.split() for line in lines)
    return [
        (int(p[4]), p[3])
        for p in rows
        if len(p) >= 6 and p[1] == "FLOCK" and p[5] == want and p[4].isdigit() and int(p[4]) > 0
    ]
