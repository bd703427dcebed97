"""A record stage's partial output: the file beside the final one that
the record loop appends to and resumes, named for the execution's
fingerprint; opened again only when it is this user's regular file with
one name and its prefix has the digest the checkpoint recorded."""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import stat
from pathlib import Path
from typing import Any

from .._atomic import unlink_quietly
from ..errors import NonRetryable, StageFailed

__all__ = [
    "PARTIAL_MARK",
    "partial_path_for",
    "remove_stale_partials",
    "sync_output",
    "reopen_partial",
    "create_partial",
    "remove_partial",
]

log = logging.getLogger("pipekit.records")

PARTIAL_MARK = ".pipekit-partial-"
_READ = 1 << 20  # bytes per read when checking a prefix's digest


def partial_path_for(final: Path, fingerprint: str) -> Path:
    """Where a record stage appends its output for ``final``: beside it
    (the commit is a rename), named for the execution's fingerprint, and
    left alone by the temp-file sweeper (it is resumed, not swept)."""
    return final.with_name(f".{final.name}{PARTIAL_MARK}{fingerprint[:16]}")


def remove_stale_partials(final: Path, keep: Path) -> None:
    """Delete partial outputs of ``final`` left by executions of other
    fingerprints (their checkpoints can never be used again)."""
    prefix = f".{final.name}{PARTIAL_MARK}"
    try:
        names = os.listdir(final.parent)
    except FileNotFoundError:
        return
    for name in names:
        if name.startswith(prefix) and name != keep.name:
            unlink_quietly(final.parent / name)
            log.info("removed %s, the partial output of an outdated execution", name)


def sync_output(fd: int) -> None:
    """Make the partial output durable (a module function, so that tests can
    slow it down to aim kills at it)."""
    getattr(os, "fdatasync", os.fsync)(fd)


def _not_ours(st: os.stat_result) -> str | None:
    """Why a file found at a partial output's name is not one this
    execution made (a planted file is never written through), or None."""
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    if st.st_uid != os.geteuid():
        return "owned by another user"
    if st.st_nlink != 1:
        return "a hard link to another file"
    return None


def reopen_partial(path: Path, length: int, digest: str) -> tuple[int, Any] | str:
    """The partial output opened to resume (never through a symlink, never a
    file another user or another name holds) and cut to ``length`` once its
    first ``length`` bytes hash to ``digest``: (descriptor, their hash), or
    why it cannot be resumed."""
    name = f"its partial output {path.name}"
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return f"{name} is missing"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return f"{name} is a symbolic link, not a regular file (never followed)"
        return f"{name} cannot be opened ({exc.strerror})"
    why = _not_ours(os.fstat(fd))
    why = why and f"{name} is {why} (never written through)"
    os.set_blocking(fd, True)
    h = hashlib.sha256()
    done = 0
    try:
        while why is None and done < length:
            chunk = os.pread(fd, min(length - done, _READ), done)
            if not chunk:
                why = f"{name} holds {done} bytes, fewer than the {length} it recorded"
            h.update(chunk)
            done += len(chunk)
    except OSError as exc:
        why = f"{name} cannot be read ({exc.strerror})"
    if why is None and h.hexdigest() != digest:
        why = (
            f"{name} does not match the digest the checkpoint recorded (it was changed "
            "after the checkpoint)"
        )
    if why is not None:
        os.close(fd)
        return why
    os.ftruncate(fd, length)
    os.lseek(fd, length, os.SEEK_SET)
    return fd, h


def create_partial(path: Path) -> int:
    """A new, empty partial output: created exclusively, never through a
    name planted there (a symlink or a hard link is removed, not followed)."""
    for _ in range(3):
        try:
            return os.open(
                path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644
            )
        except FileExistsError:
            remove_partial(path)
    raise StageFailed(f"cannot create {path}: something keeps putting a file at its name")


def remove_partial(path: Path) -> None:
    """Remove what stands at a partial output's name (the name only: a
    symlink's target is left alone); a folder there is a clear error."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        raise NonRetryable(
            f"{path} is a folder, where the stage keeps its partial output; remove it"
        )
    problem = _not_ours(st)
    if problem is not None:
        log.warning("removing %s: it is %s (never written through)", path.name, problem)
    unlink_quietly(path)
