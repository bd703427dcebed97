"""Crash-safe file writes: temp file + fsync + rename + folder fsync.

A reader never sees a partial file under its final name: either the old
content or the new one. Temp files live beside their target, so that a
rename never crosses a file system, under names nobody can plant a symlink
at: a stage's temp output is ``<folder>/.pipekit-tmp-<host>-<pid>-<random>/<name>``,
in a private folder (mode 0700, made with ``mkdir``, which fails on any
existing entry, a symlink included) that only
this user can add entries to; a file written here is
``.<name>.pipekit-tmp-<host>-<pid>-<random>``, created with ``O_EXCL`` (which
never follows a symlink). :func:`sweep_temp_files` removes what a killed
process left: at once for a dead process of this host, after a day without
a change for another host's (see :data:`STALE_AFTER_S`), never a live writer's.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import shutil
import stat
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "RunTempFolders",
    "STALE_AFTER_S",
    "TEMP_MARK",
    "temp_path_for",
    "fsync_dir",
    "fsync_file",
    "atomic_write_bytes",
    "commit_files",
    "move_into_place",
    "move_tree_into_place",
    "remove_aside",
    "overwrite_line",
    "pid_runs",
    "sweep_temp_files",
    "sync_files",
    "sync_dirs",
    "temp_name_for",
    "unlink_quietly",
    "write_and_replace",
]

TEMP_MARK = ".pipekit-tmp-"
_HOST = re.sub(r"[^A-Za-z0-9_.]", "_", os.uname().nodename if hasattr(os, "uname") else "host")

STALE_AFTER_S = 24 * 3600.0
"""A temp file of another host (whose processes cannot be asked whether they
live) is swept once nothing in it changed for this long."""


def temp_path_for(final: Path, tag: str = "") -> Path:
    """A new temp path for ``final``: ``final``'s name in a new private
    folder beside it (same file system). Nothing is at the path yet, and
    nobody else can put anything there; :func:`move_into_place` renames it
    to ``final``, :func:`unlink_quietly` discards it (with its folder)."""
    extra = f"{tag}-" if tag else ""
    prefix = f"{TEMP_MARK}{extra}{_HOST}-{os.getpid()}-"
    while True:
        folder = os.path.abspath(os.path.join(final.parent, prefix + os.urandom(8).hex()))
        try:
            os.mkdir(folder, 0o700)
        except FileExistsError:
            continue
        return Path(folder, final.name)


class RunTempFolders:
    """Temp paths for a run's outputs: one private folder (as
    :func:`temp_path_for` makes) per folder of outputs, made on first use
    and kept until :meth:`remove`, instead of a folder made and removed for
    each output (a ``mkdir`` and an ``rmdir`` per stage). A folder that is
    no longer the one made (removed, or replaced: another inode, owner or
    mode) is made again."""

    def __init__(self) -> None:
        self._folders: dict[Path, tuple[str, int, int]] = {}  # parent -> path, dev, inode
        self._lock = threading.Lock()

    def path_for(self, final: Path) -> Path:
        """A temp path for ``final``; nothing is at it yet unless an earlier
        attempt left it (see :func:`unlink_quietly`)."""
        with self._lock:
            known = self._folders.get(final.parent)
            if known is None or not _is_folder_made(*known):
                folder = temp_path_for(final, RUN_TAG).parent
                made = os.lstat(folder)
                known = self._folders[final.parent] = (str(folder), made.st_dev, made.st_ino)
        return Path(known[0], final.name)

    def remove(self) -> None:
        """Remove the folders made, those now empty (what a stage left in
        one stays for the sweep)."""
        with self._lock:
            for folder, _dev, _inode in self._folders.values():
                with contextlib.suppress(OSError):
                    os.rmdir(folder)
            self._folders.clear()


RUN_TAG = "run"


def _is_folder_made(folder: str, dev: int, inode: int) -> bool:
    try:
        found = os.lstat(folder)
    except OSError:
        return False
    return (
        (found.st_dev, found.st_ino) == (dev, inode)
        and stat.S_ISDIR(found.st_mode)
        and stat.S_IMODE(found.st_mode) == 0o700
        and found.st_uid == os.geteuid()
    )


def temp_name_for(name: str, tag: str = "") -> str:
    """A new, unguessable temp file name for file ``name`` (in the same
    folder); create it with ``O_EXCL``."""
    extra = f"{tag}-" if tag else ""
    return f".{name}{TEMP_MARK}{extra}{_HOST}-{os.getpid()}-{os.urandom(8).hex()}"


def _private_temp_folder(path: Path | str) -> str | None:
    """The private temp folder of :func:`temp_path_for` that holds ``path``, or None."""
    folder = os.path.dirname(path)
    name = os.path.basename(folder)
    if not name.startswith(TEMP_MARK) or name.startswith(f"{TEMP_MARK}{RUN_TAG}-"):
        return None  # (a run's folder: see RunTempFolders)
    return folder


def move_into_place(temp: Path | str, final: Path | str) -> None:
    """Rename ``temp`` to ``final`` (atomically), then remove the private
    temp folder it was in, now empty."""
    os.replace(temp, final)
    _remove_if_empty(_private_temp_folder(temp))


ASIDE_TAG = "aside"


def move_tree_into_place(temp: Path | str, final: Path | str) -> Path | None:
    """Rename the folder ``temp`` to ``final``. What is at ``final`` is
    first renamed aside, into a private temp folder (see
    :func:`temp_path_for`) tagged ``aside``; return where it went (None
    when nothing was there): the caller removes it with
    :func:`remove_aside` once the rename is durable. A process killed
    between the two renames leaves the old tree aside and nothing under
    ``final``; :func:`sweep_temp_files` puts it back."""
    final = Path(final)
    aside = None
    if os.path.lexists(final):
        aside = temp_path_for(final, ASIDE_TAG)
        os.rename(final, aside)
    try:
        os.rename(temp, final)
    except BaseException:
        if aside is not None:
            os.rename(aside, final)
            _remove_if_empty(os.fspath(aside.parent))
        raise
    return aside


def remove_aside(aside: Path) -> None:
    """Remove what :func:`move_tree_into_place` put aside, with its folder."""
    shutil.rmtree(aside.parent, ignore_errors=True)


def _restore_aside(folder: str) -> None:
    """Put back what a killed :func:`move_tree_into_place` left aside in
    ``folder`` where nothing took its place."""
    parent = os.path.dirname(folder)
    for name in os.listdir(folder):
        final = os.path.join(parent, name)
        if not os.path.lexists(final):
            os.rename(os.path.join(folder, name), final)
            fsync_dir(parent)


def _remove_if_empty(folder: str | None) -> None:
    if folder is not None:
        try:
            os.rmdir(folder)
        except OSError:
            pass  # not empty (the stage left more there): swept later


LINE_WIDTH = 128


def overwrite_line(fd: int, line: str) -> None:
    """Put ``line`` at the start of the open file ``fd``, padded with
    spaces to :data:`LINE_WIDTH` bytes (its newline last), so that it
    covers whatever a line written earlier left there. A lock file's
    holder line is rewritten so, not truncated first: truncating a file
    that holds a block frees the block, which took 95 ms on this project's
    ext4 for one stage's lock in a rerun (``strace -T``)."""
    data = line.encode().ljust(LINE_WIDTH - 1) + b"\n"
    if len(data) > LINE_WIDTH:  # longer than any line before it: nothing to cover
        os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)


def fsync_dir(path: Path | str) -> None:
    """fsync a folder so that renames and creations in it are durable."""
    fsync_file(path, getattr(os, "O_DIRECTORY", 0))


def fsync_file(path: Path | str, flags: int = 0) -> None:
    fd = os.open(path, os.O_RDONLY | flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes, *, durable: bool = True, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` so that a crash leaves the old or the new content."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(temp_name_for(path.name))
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    write_and_replace(fd, tmp, path, data, durable=durable)
    if durable:
        fsync_dir(path.parent)


def write_and_replace(
    fd: int, tmp: Path | str, final: Path | str, data: bytes, *, durable: bool = True
) -> None:
    """Write all of ``data`` to ``fd`` (the new temp file ``tmp``), fsync
    it when ``durable``, close it and rename ``tmp`` to ``final``; on any
    failure ``tmp`` is removed. The folder's fsync is the caller's."""
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if durable:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        unlink_quietly(tmp)
        raise
    os.close(fd)
    try:
        os.replace(tmp, final)
    except BaseException:
        unlink_quietly(tmp)
        raise


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
        move_into_place(tmp, final)
        folders.add(final.parent)
    sync_dirs(folders)


def sweep_temp_files(folders: Iterable[Path], now: float | None = None) -> list[Path]:
    """Remove the temp files and folders (see :func:`temp_path_for`) that
    killed processes left in ``folders``; return them.

    A temp of this host is removed when its writer's process is gone; one
    of another host when nothing in it changed for :data:`STALE_AFTER_S`.
    A live writer's (of this host, or of another that still writes) stays.
    """
    now = time.time() if now is None else now
    removed: list[Path] = []
    for folder in set(folders):
        try:
            entries = list(os.scandir(folder))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            if TEMP_MARK in entry.name and _is_stale(entry, now):
                try:
                    _remove_temp(entry)
                except OSError:
                    continue  # (unreadable, say): left; never the run's end
                removed.append(Path(entry.path))
    return removed


def _is_stale(entry: os.DirEntry[str], now: float) -> bool:
    """Whether a temp's writer is gone: a dead process of this host, or
    nothing changed in it for :data:`STALE_AFTER_S`."""
    host, pid = _writer_of(entry.name)
    if pid is None:
        return False  # not a name of ours (a state file's own temp, say)
    if host == _HOST:
        return pid != os.getpid() and not pid_runs(pid)
    try:
        return now - _last_change(entry) > STALE_AFTER_S
    except FileNotFoundError:
        return False


def _last_change(entry: os.DirEntry[str]) -> float:
    """The newest modification time of a temp file, or of a temp folder
    and what is in it (symlinks not followed)."""
    newest = entry.stat(follow_symlinks=False).st_mtime
    if entry.is_dir(follow_symlinks=False):
        with os.scandir(entry.path) as inside:
            for child in inside:
                newest = max(newest, child.stat(follow_symlinks=False).st_mtime)
    return newest


def _remove_temp(entry: os.DirEntry[str]) -> None:
    try:
        if entry.is_dir(follow_symlinks=False):
            if entry.name.startswith(f"{TEMP_MARK}{ASIDE_TAG}-"):
                _restore_aside(entry.path)
            shutil.rmtree(entry.path)  # (rmtree never follows a symlink inside)
        else:
            os.unlink(entry.path)
    except FileNotFoundError:
        pass


def _writer_of(name: str) -> tuple[str, int | None]:
    """(host, pid) of a temp's writer, from its name."""
    parts = name.rsplit(TEMP_MARK, 1)[1].split("-")
    if len(parts) < 3:
        return "", None
    try:
        return parts[-3], int(parts[-2])
    except ValueError:
        return "", None


def pid_runs(pid: int) -> bool:
    """Whether a process ``pid`` of this host runs (a zombie does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # it exists (e.g. another user's)
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except FileNotFoundError:
        return False  # it ended meanwhile
    except (OSError, IndexError):
        return True


def unlink_quietly(path: Path | str) -> None:
    """Remove ``path`` if it is there; for a temp path of
    :func:`temp_path_for`, its private folder too when that is then empty."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError:  # (EISDIR on Linux, EPERM elsewhere): a temp folder output
        if os.path.islink(path) or not os.path.isdir(path):
            raise
        shutil.rmtree(path)
    _remove_if_empty(_private_temp_folder(path))


# -- batched durability -------------------------------------------------------


@functools.cache
def _get_syncfs() -> Any:
    """syncfs(2) of libc where the OS has it (Linux): a function of a
    descriptor that raises OSError; else False."""
    if not sys.platform.startswith("linux") or os.environ.get("PIPEKIT_SYNC", "") == "fsync":
        return False
    import ctypes  # here: a no-op rerun syncs nothing and would pay ~3 ms to import it

    try:
        libc_syncfs = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return False
    libc_syncfs.argtypes = [ctypes.c_int]

    def syncfs(fd: int) -> None:
        if libc_syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"syncfs failed: {os.strerror(err)}")

    return syncfs


def _syncfs_each_device(paths: Iterable[Path | str]) -> bool:
    syncfs = _get_syncfs()
    if not syncfs:
        return False
    seen: set[int] = set()
    for p in paths:
        st = os.stat(p)
        if st.st_dev in seen:
            continue
        seen.add(st.st_dev)
        fd = os.open(p, os.O_RDONLY)
        try:
            syncfs(fd)
        except OSError as exc:
            raise OSError(exc.errno, exc.strerror, str(p)) from None
        finally:
            os.close(fd)
    return True


def sync_files(paths: Sequence[Path | str]) -> None:
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
