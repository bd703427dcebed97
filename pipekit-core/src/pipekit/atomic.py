"""Crash-safe file writes: temp file + fsync + rename + folder fsync.

A reader never sees a partial file under its final name: either the old
content or the new one. Temp files are named ``.<name>.pipekit-tmp-<host>-<pid>-<n>``
beside their target so that a rename never crosses a file system, and so that
:func:`sweep_temp_files` can find what a killed process of this host left
behind without touching a live writer's files (of this host or another).
"""

from __future__ import annotations

import itertools
import os
import re
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = [
    "TEMP_MARK",
    "temp_path_for",
    "fsync_dir",
    "fsync_file",
    "atomic_write_bytes",
    "commit_files",
    "sweep_temp_files",
    "sync_files",
    "sync_dirs",
    "temp_name_for",
    "unlink_quietly",
]

TEMP_MARK = ".pipekit-tmp-"
_counter = itertools.count()
_HOST = re.sub(r"[^A-Za-z0-9_.]", "_", os.uname().nodename if hasattr(os, "uname") else "host")


def temp_path_for(final: Path, tag: str = "") -> Path:
    """A unique temp path beside ``final`` (same folder, same file system)."""
    return final.with_name(temp_name_for(final.name, tag))


def temp_name_for(name: str, tag: str = "") -> str:
    """The unique temp file name of :func:`temp_path_for`, for file ``name``."""
    extra = f"{tag}-" if tag else ""
    return f".{name}{TEMP_MARK}{extra}{_HOST}-{os.getpid()}-{next(_counter)}"


def fsync_dir(path: Path | str) -> None:
    """fsync a folder so that renames and creations in it are durable."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path | str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes, *, durable: bool = True, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` so that a crash leaves the old or the new content."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_for(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        if durable:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        unlink_quietly(tmp)
        raise
    os.close(fd)
    try:
        os.replace(tmp, path)
    except BaseException:
        unlink_quietly(tmp)
        raise
    if durable:
        fsync_dir(path.parent)


def commit_files(pairs: Iterable[tuple[Path, Path]]) -> None:
    """Make each ``temp`` durable, rename it to its ``final`` name, then make
    every folder touched durable (see :func:`sync_files`, :func:`sync_dirs`).
    Files first, then renames, then folders: so a crash leaves each final
    name either absent, old, or complete and new."""
    pairs = list(pairs)
    sync_files([tmp for tmp, _final in pairs])
    folders: set[Path] = set()
    for tmp, final in pairs:
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, final)
        folders.add(final.parent)
    sync_dirs(folders)


def sweep_temp_files(folders: Iterable[Path]) -> list[Path]:
    """Remove temp files left beside outputs by killed processes.

    Only files carrying :data:`TEMP_MARK`, written on this host by a process
    that is no longer alive, are removed: a concurrent runner's temp files
    (here or on another host sharing the folder) are left alone.
    """
    removed: list[Path] = []
    for folder in set(folders):
        try:
            entries = list(os.scandir(folder))
        except FileNotFoundError:
            continue
        for entry in entries:
            name = entry.name
            if TEMP_MARK not in name:
                continue
            host, pid = _writer_of(name)
            if host != _HOST or pid is None or pid == os.getpid() or _alive(pid):
                continue
            try:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
            except FileNotFoundError:
                pass
    return removed


def _writer_of(name: str) -> tuple[str, int | None]:
    """(host, pid) of a temp file's writer, from its name."""
    parts = name.rsplit(TEMP_MARK, 1)[1].split("-")
    if len(parts) < 3:
        return "", None
    try:
        return parts[-3], int(parts[-2])
    except ValueError:
        return "", None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def unlink_quietly(path: Path | str) -> None:
    """Remove ``path`` if it is there."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


# -- batched durability -------------------------------------------------------

_syncfs: Any = None


def _get_syncfs() -> Any:
    """libc's syncfs(2) where the OS has it (Linux), else False."""
    global _syncfs
    if _syncfs is None:
        _syncfs = False
        if sys.platform.startswith("linux") and os.environ.get("PIPEKIT_SYNC", "") != "fsync":
            try:
                import ctypes

                libc = ctypes.CDLL(None, use_errno=True)
                fn = libc.syncfs
                fn.argtypes = [ctypes.c_int]
                _syncfs = fn
            except (OSError, AttributeError):
                _syncfs = False
    return _syncfs


def _syncfs_each_device(paths: Iterable[Path]) -> bool:
    fn = _get_syncfs()
    if not fn:
        return False
    seen: set[int] = set()
    for p in paths:
        st = os.stat(p)
        if st.st_dev in seen:
            continue
        seen.add(st.st_dev)
        fd = os.open(p, os.O_RDONLY)
        try:
            if fn(fd) != 0:
                import ctypes

                err = ctypes.get_errno()
                raise OSError(err, f"syncfs failed: {os.strerror(err)}", str(p))
        finally:
            os.close(fd)
    return True


def sync_files(paths: list[Path]) -> None:
    """Make the content of ``paths`` durable. Several files on one file
    system cost one ``syncfs`` (one journal commit) instead of one fsync
    each; ``PIPEKIT_SYNC=fsync`` forces per-file fsync."""
    if len(paths) > 1 and _syncfs_each_device(paths):
        return
    for p in paths:
        fsync_file(p)


def sync_dirs(folders: set[Path]) -> None:
    """Make renames into ``folders`` durable (one syncfs per file system
    when there are several folders)."""
    if len(folders) > 1 and _syncfs_each_device(sorted(folders)):
        return
    for f in folders:
        fsync_dir(f)
