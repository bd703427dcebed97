"""Modes of what pipekit keeps about a pipeline: state, idempotency records,
dead letters. Records can hold data, so they are the runner's user's alone,
whatever the umask: files 0600, folders 0700 (a umask can only take bits
away from a mode given at creation, never add them)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["FILE_MODE", "DIR_MODE", "make_private_dir", "check_writable"]

FILE_MODE = 0o600
DIR_MODE = 0o700


def make_private_dir(path: Path | str) -> None:
    """Make ``path`` and its missing parents as folders of mode 0700
    (folders that exist are left as they are)."""
    path = Path(path)
    missing = []
    while not path.is_dir():
        missing.append(path)
        if path.parent == path:
            break
        path = path.parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder, DIR_MODE)
        except FileExistsError:
            if not folder.is_dir():
                raise


def check_writable(folder: Path | str) -> None:
    """Make ``folder`` (0700) if missing and write a byte in it, so that a
    read-only or full file system is one clear
    :class:`~pipekit.errors.StorageError` naming the folder before a run
    starts any work, rather than a failure halfway through it."""
    from .errors import storage_error

    probe = os.path.join(folder, f".pipekit-probe-{os.getpid()}-{os.urandom(4).hex()}")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW
    try:
        make_private_dir(folder)
        fd = os.open(probe, flags, FILE_MODE)
        try:
            os.write(fd, b"\0")
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as exc:
        failure = storage_error(OSError(exc.errno, exc.strerror), f"in {folder}")
        if failure is None:
            raise
        raise failure from None
