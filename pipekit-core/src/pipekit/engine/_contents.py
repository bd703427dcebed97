"""What a folder or a glob holds when a stage is decided: its digest, its
entries (for the reasons), and a glob's matches (the stage's inputs)."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import attrs

from ..plan._paths import is_folder, is_glob
from ..state._folders import (
    NEEDS_READ,
    Entry,
    FolderProblem,
    entries_digest,
    file_entries,
    folder_entries,
)

__all__ = ["Content", "NEEDS_READ", "content_of", "matches_of"]


@attrs.define
class Content:
    digest: str
    entries: list[Entry]
    paths: list[Path] | None = None
    """A glob's matches, sorted."""


def matches_of(root: Path, pattern: str) -> list[tuple[str, str]]:
    """(key, path) of the files glob ``pattern`` (a key) matches, sorted by
    key (``**``: any folders; names starting with ``.`` only when the
    pattern says so)."""
    import glob

    found = []
    for key in glob.glob(pattern, root_dir=root, recursive=True):
        path = os.path.join(root, key)
        if os.path.isfile(path):
            found.append((key.replace(os.sep, "/"), path))
    found.sort()
    return found


def content_of(
    cache: Any, root: Path, key: str, path: Path, read_up_to: int | None
) -> Content | str | None:
    """The content of folder or glob ``key``: None when a folder is
    missing, :data:`NEEDS_READ` when answering takes a read longer than
    ``read_up_to``; a :class:`FolderProblem` when it cannot be used."""
    if is_glob(key):
        files = matches_of(root, key)
        if not files:
            raise FolderProblem(f"input {key!r} matches no file")
        entries = file_entries(cache, files, read_up_to)
        if entries == NEEDS_READ:
            return NEEDS_READ
        assert not isinstance(entries, str)
        return Content(entries_digest(entries), entries, [Path(p) for _, p in files])
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return None
    if not stat.S_ISDIR(mode):
        raise FolderProblem(f"{key!r} is a file, not a folder: write it as {key.rstrip('/')!r}")
    assert is_folder(key)
    found = folder_entries(cache, os.fspath(path), key, read_up_to)
    if found == NEEDS_READ:
        return NEEDS_READ
    assert not isinstance(found, str)
    return Content(entries_digest(found), found)
