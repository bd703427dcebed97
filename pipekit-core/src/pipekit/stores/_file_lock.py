"""File locks on portalocker: OS locks that the OS frees when a process dies,
so a killed runner never leaves a stale lock behind.

Each key has one lock file, ``<root>/<safe key>.lock``, which also carries the
fencing token (incremented under the lock at every acquisition) and who holds
the lock (pid and host), so that a timeout can say who is in the way.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import stat
import time
from pathlib import Path
from typing import Any

from .._atomic import overwrite_line, pid_runs
from ..errors import StorageError

__all__ = ["FileLockBackend", "FileLease"]

log = logging.getLogger("pipekit.locks")
_SAFE = re.compile(r"[^A-Za-z0-9_.-]")
_HOLDER = re.compile(r"\d+ pid (?P<pid>\d+) on host (?P<host>\S+)")
_HOST = os.uname().nodename


class FileLease:
    def __init__(self, path: Path, key: str) -> None:
        self.path = path
        self.key = key
        self.token: int | None = None
        self._fd: int | None = None

    def acquire(self, timeout: float | None = None) -> bool:
        import portalocker  # deferred: it imports redis-py and importlib.metadata

        if self._fd is not None:
            raise RuntimeError(f"lock {self.key!r} is already held by this lease")
        fd = self._open()
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.002
        try:
            while True:
                try:  # the OS lock is held while the descriptor is open
                    portalocker.lock(fd, portalocker.LOCK_EX | portalocker.LOCK_NB)
                    break
                except portalocker.LockException:
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        os.close(fd)
                        return False
                time.sleep(delay if left is None else min(delay, left))
                delay = min(delay * 2, 0.1)
        except BaseException:
            os.close(fd)
            raise
        previous = os.pread(fd, 64, 0).split(b" ", 1)[0]
        try:
            token = int(previous) + 1
        except ValueError:
            token = 1
        overwrite_line(fd, f"{token} pid {os.getpid()} on host {_HOST}")
        self.token = token
        self._fd = fd
        return True

    def _open(self) -> int:
        """The lock file, opened for the lock (created, with its folder,
        when missing). A folder in its place is removed when it is empty (a
        lock file is never a folder: nothing of pipekit's is lost), else it
        is a :class:`StorageError` naming it."""
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC
        try:
            return os.open(self.path, flags, 0o644)
        except FileNotFoundError:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except IsADirectoryError:
            try:
                os.rmdir(self.path)
            except FileNotFoundError:
                pass  # another runner removed it
            except OSError:
                raise StorageError(
                    f"the lock file {self.path} is a folder with files in it; "
                    "move it away and run again",
                    path=str(self.path),
                ) from None
            log.warning("removed the empty folder %s that stood where a lock file goes", self.path)
        return os.open(self.path, flags, 0o644)

    def release(self) -> None:
        import portalocker  # deferred: see acquire

        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            portalocker.unlock(fd)
        finally:
            os.close(fd)

    def renew(self) -> None:
        """OS locks do not expire: nothing to renew."""

    def holder(self) -> str | None:
        try:
            text = self.path.read_text(errors="replace").strip()
        except OSError:  # missing, or not a file
            return None
        parts = text.split(" ", 1)
        return parts[1] if len(parts) == 2 else None

    def holder_state(self) -> str:
        """``alive`` when the OS lock is held and its holder, as the lock
        file names it, is a process that runs (one on another host counts
        as alive: the OS lock is held for it); ``gone`` when nobody holds
        the OS lock, or the holder named is a process of this host that no
        longer runs; ``unknown`` when the lock file names no holder or
        cannot be read."""
        import portalocker  # deferred: see acquire

        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return "gone"
        except OSError:
            return "unknown"
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return "unknown"  # e.g. a folder where the lock file goes
            try:
                portalocker.lock(fd, portalocker.LOCK_EX | portalocker.LOCK_NB)
            except portalocker.LockException:
                record = os.pread(fd, 256, 0)
            else:  # free: nobody holds it
                portalocker.unlock(fd)
                return "gone"
        finally:
            os.close(fd)
        found = _HOLDER.match(record.decode("utf-8", "replace"))
        if found is None:
            return "unknown"
        if found["host"] != _HOST or pid_runs(int(found["pid"])):
            return "alive"
        return "gone"

    def __enter__(self) -> FileLease:
        if self._fd is None:
            self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class FileLockBackend:
    def __init__(self, root: Path) -> None:
        self.root = root

    def lock(self, key: str, ttl: float | None = None) -> FileLease:
        safe = _SAFE.sub("_", key)
        if len(safe) > 120:
            safe = safe[:80] + "-" + hashlib.sha256(key.encode()).hexdigest()[:16]
        return FileLease(self.root / f"{safe}.lock", key)

    def doctor(self) -> list[Any]:
        return _doctor(self.root)


def _doctor(root: Path) -> list[Any]:
    """The file backend's ``pipekit doctor`` checks: the state folder can be
    written and OS locks work there. Creates nothing that stays."""
    import tempfile

    from ._doctor import FAIL, OK, Check

    state = root.parent
    existing = state
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not os.access(existing, os.W_OK | os.X_OK):
        return [Check("state folder", FAIL, f"{existing} is not writable (state folder {state})")]
    try:
        with tempfile.TemporaryDirectory(dir=existing, prefix=".pipekit-doctor-") as tmp:
            probe = Path(tmp) / "probe"
            with open(probe, "wb") as f:
                f.write(b"ok")
                f.flush()
                os.fsync(f.fileno())
            lease = FileLockBackend(Path(tmp)).lock("doctor")
            other = FileLockBackend(Path(tmp)).lock("doctor")
            if not lease.acquire(timeout=0) or other.acquire(timeout=0):
                return [Check("locks", FAIL, f"OS locks do not exclude each other in {existing}")]
            lease.release()
    except OSError as exc:
        return [Check("state folder", FAIL, f"cannot write in {existing}: {exc}")]
    where = state if state.exists() else f"{state} (created on the first run)"
    return [
        Check("state folder", OK, f"{where} is writable (files are fsynced)"),
        Check("locks", OK, "OS locks work there; the OS frees them when a process dies"),
    ]
