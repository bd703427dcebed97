"""The content hash of a folder, or of a list of files (a glob's matches).

A folder's digest is SHA-256 over its sorted entries: each file's path
relative to the pipeline (its key), its content hash and its executable
bit; each folder inside it by its key (so that an empty folder counts).
Every file goes through the stat-keyed hash cache: an unchanged folder
costs one ``stat`` per file and no read.

The entries themselves (a *manifest*) are kept by :class:`Manifests`,
one file per digest, so that a later run can say which files changed.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .. import _json
from .._atomic import atomic_write_bytes
from ..errors import StageFailed
from ._hash_cache import paused_gc

__all__ = [
    "Entry",
    "FolderProblem",
    "Manifests",
    "NEEDS_READ",
    "describe_changes",
    "entries_digest",
    "file_entries",
    "folder_entries",
    "walk_folder",
]

Entry = tuple[str, str, bool]
"""(key, content hash, executable); a folder's key ends with ``/`` and its
hash is empty."""

NEEDS_READ = "needs-read"
"""What :func:`folder_entries` returns when answering would take a read
longer than it was allowed."""


class FolderProblem(StageFailed):
    """A folder's content cannot be hashed or committed (said in words)."""


def walk_folder(path: str, key: str, contain: str | None = None) -> Iterator[tuple[str, str, Any]]:
    """(key, path, stat) of every file and folder under ``path`` (a folder's
    stat is None), folder ``path`` having the key ``key`` (ending with ``/``).
    A link to a file is followed; a link to a folder, or with ``contain``
    (the real path of the folder being committed) a link that points outside
    it, is a :class:`FolderProblem`, as is an unreadable folder."""
    todo = [(path, key)]
    while todo:
        folder, folder_key = todo.pop()
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    child_key = folder_key + entry.name
                    if entry.is_dir(follow_symlinks=False):
                        todo.append((entry.path, child_key + "/"))
                        yield child_key + "/", entry.path, None
                        continue
                    try:
                        if entry.is_symlink():
                            st = _link_target(entry.path, child_key, contain)
                        else:
                            st = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue  # removed meanwhile
                    if not stat.S_ISREG(st.st_mode):
                        raise FolderProblem(f"{child_key!r} is not a regular file or a folder")
                    yield child_key, entry.path, st
        except FileNotFoundError:
            continue  # removed meanwhile
        except OSError as exc:
            raise FolderProblem(
                f"cannot read folder {folder_key!r}: {exc.strerror or exc}"
            ) from None


def _link_target(path: str, key: str, contain: str | None) -> os.stat_result:
    if contain is not None:
        target = os.path.realpath(path)
        if not target.startswith(contain.rstrip(os.sep) + os.sep):
            raise FolderProblem(
                f"{key!r} is a link to {os.readlink(path)!r}, outside the folder (refused)"
            )
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise FolderProblem(f"{key!r} is a broken link") from None
    if stat.S_ISDIR(st.st_mode):
        raise FolderProblem(f"{key!r} is a link to a folder (links to folders are not followed)")
    return st


def folder_entries(
    cache: Any, path: str, key: str, read_up_to: int | None = None
) -> list[Entry] | str:
    """The sorted entries of folder ``path`` (key ``key``, ending with ``/``),
    each file's hash from ``cache``; :data:`NEEDS_READ` when ``read_up_to``
    is given and a file longer than it is not cached."""
    found: list[Entry] = []
    lookup = cache.lookup
    with paused_gc():
        for child_key, child_path, st in walk_folder(path, key):
            if st is None:
                found.append((child_key, "", False))
                continue
            digest = lookup(child_key, st) or _file_digest(
                cache, child_key, child_path, st, read_up_to
            )
            if digest is None:
                return NEEDS_READ
            found.append((child_key, digest, bool(st.st_mode & stat.S_IXUSR)))
    found.sort()
    return found


def file_entries(
    cache: Any, files: list[tuple[str, str]], read_up_to: int | None = None
) -> list[Entry] | str:
    """The entries of ``files`` ((key, path) pairs, sorted), as
    :func:`folder_entries` makes them."""
    found: list[Entry] = []
    for key, path in files:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise FolderProblem(f"{key!r} was removed") from None
        digest = _file_digest(cache, key, path, st, read_up_to)
        if digest is None:
            return NEEDS_READ
        found.append((key, digest, bool(st.st_mode & stat.S_IXUSR)))
    return found


def _file_digest(
    cache: Any, key: str, path: str, st: os.stat_result, read_up_to: int | None
) -> str | None:
    digest: str | None = cache.lookup(key, st)
    if digest is not None:
        return digest
    if read_up_to is not None and st.st_size > read_up_to:
        return None
    try:
        return cache.read(key, path, st)  # type: ignore[no-any-return]
    except OSError as exc:
        raise FolderProblem(f"cannot read {key!r}: {exc.strerror or exc}") from None


def entries_digest(entries: list[Entry]) -> str:
    """The digest of sorted entries."""
    h = hashlib.sha256(b"pipekit-tree-v1\0")
    lines = [
        f"{key}\0{digest}\0{'x' if executable else '-'}\n" for key, digest, executable in entries
    ]
    h.update("".join(lines).encode())
    return "tree:" + h.hexdigest()


class Manifests:
    """Manifests (a digest's entries) kept in ``folder``, one file per
    digest, written once; only for explaining what changed, so a lost or
    damaged one only makes a reason less precise."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _path(self, digest: str) -> Path:
        return self.folder / (digest.removeprefix("tree:") + ".json")

    def save(self, digest: str, entries: list[Entry]) -> None:
        path = self._path(digest)
        if path.exists():
            return
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            data = _json.dumps([[k, d, x] for k, d, x in entries])
            atomic_write_bytes(path, data, durable=False, mode=0o600)
        except OSError:
            pass  # only a less precise reason later

    def load(self, digest: str) -> list[Entry] | None:
        try:
            data = _json.loads(self._path(digest).read_bytes())
            return [(str(k), str(d), bool(x)) for k, d, x in data]
        except (OSError, ValueError, TypeError):
            return None


SHOWN = 2
"""How many of the changed files a reason names."""


def describe_changes(old: list[Entry], new: list[Entry]) -> str:
    """``2 files changed, 1 added (a.csv, z.csv, ...)``: what differs
    between two manifests (folders inside left out)."""
    before = {k: (d, x) for k, d, x in old if not k.endswith("/")}
    after = {k: (d, x) for k, d, x in new if not k.endswith("/")}
    changed = sorted(k for k in after.keys() & before.keys() if after[k] != before[k])
    added = sorted(after.keys() - before.keys())
    removed = sorted(before.keys() - after.keys())
    parts = []
    if changed:
        parts.append(f"{len(changed)} file{'s' if len(changed) > 1 else ''} changed")
    if added:
        parts.append(f"{len(added)} added")
    if removed:
        parts.append(f"{len(removed)} removed")
    if not parts:
        return "its folders changed"
    names = sorted(changed + added + removed)
    shown = ", ".join(names[:SHOWN]) + (", ..." if len(names) > SHOWN else "")
    return f"{', '.join(parts)} ({shown})"
