"""A file checkpoint byte store: ``<root>/<namespace>/<id>``, atomic puts.

``namespace_lock(namespace)`` serializes the writers of a namespace across
processes: an OS lock (portalocker) on the namespace's folder itself (no lock
file is left behind), which the OS frees when its holder dies.
:class:`pipekit.CheckpointManager` holds it around every change of a
namespace (blob, index, deletions), so a save that returns is in the index
whoever else writes. So, too, a temp file found in a namespace while its lock
is held is one a killed writer left: ``sweep_temps`` lists and removes those.
"""

from __future__ import annotations

import builtins
import contextlib
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .._atomic import TEMP_MARK, atomic_write_bytes, unlink_quietly

__all__ = ["FileCheckpointStore"]

_SAFE = re.compile(r"^[A-Za-z0-9_.:-]+$")


def _check(part: str, what: str) -> str:
    if not _SAFE.match(part) or part in (".", ".."):
        raise ValueError(f"checkpoint {what} {part!r} may hold only letters, digits and _.:-")
    return part


class FileCheckpointStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, namespace: str, id: str) -> Path:
        return self.root / _check(namespace, "namespace") / _check(id, "id")

    def put(
        self, namespace: str, id: str, data: bytes, *, fence: tuple[str, int] | None = None
    ) -> None:
        atomic_write_bytes(self._path(namespace, id), data)

    def get(self, namespace: str, id: str) -> bytes | None:
        try:
            return self._path(namespace, id).read_bytes()
        except FileNotFoundError:
            return None

    def _names(self, namespace: str, *, temp: bool) -> builtins.list[str]:
        """The store's ids (or, with ``temp``, the temp files) in the namespace."""
        try:
            names = os.listdir(self.root / _check(namespace, "namespace"))
        except FileNotFoundError:
            return []
        return sorted(n for n in names if (TEMP_MARK in n) == temp)

    def list(self, namespace: str) -> list[str]:
        return self._names(namespace, temp=False)

    def delete(self, namespace: str, id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path(namespace, id))

    @contextmanager
    def namespace_lock(self, namespace: str, *, shared: bool = False) -> Iterator[None]:
        """Hold the namespace's lock (its folder's): exclusive (a writer) or
        ``shared`` (a reader: it sees no blob deleted under it). A reader of
        a namespace that has no folder yet reads without one."""
        import portalocker  # deferred: it imports redis-py and importlib.metadata

        folder = self.root / _check(namespace, "namespace")
        flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | getattr(os, "O_DIRECTORY", 0)
        if not shared:
            folder.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(folder, flags)
        except FileNotFoundError:
            if not shared:
                raise
            fd = -1
        if fd < 0:
            yield
            return
        try:
            portalocker.lock(fd, portalocker.LOCK_SH if shared else portalocker.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing the descriptor lets the lock go

    def sweep_temps(self, namespace: str, *, dry_run: bool = False) -> builtins.list[str]:
        """Names of the temp files (blob and index puts) in the namespace,
        removed unless ``dry_run``. Call it holding :meth:`namespace_lock`
        (shared for a dry run): every put is made under the exclusive lock,
        so what is found then was left by a writer killed mid-put."""
        names = self._names(namespace, temp=True)
        if not dry_run:
            for name in names:
                unlink_quietly(self.root / namespace / name)
        return names
