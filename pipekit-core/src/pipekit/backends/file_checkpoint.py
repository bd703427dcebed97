"""A file checkpoint byte store: ``<root>/<namespace>/<id>``, atomic puts."""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..atomic import TEMP_MARK, atomic_write_bytes

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

    def namespaces(self) -> list[str]:
        """Every namespace that holds or held something (one listing)."""
        try:
            return os.listdir(self.root)
        except FileNotFoundError:
            return []

    def list(self, namespace: str) -> list[str]:
        folder = self.root / _check(namespace, "namespace")
        try:
            return sorted(n for n in os.listdir(folder) if TEMP_MARK not in n)
        except FileNotFoundError:
            return []

    def delete(self, namespace: str, id: str) -> None:
        try:
            os.unlink(self._path(namespace, id))
        except FileNotFoundError:
            pass
