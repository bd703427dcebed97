"""The append-only transaction log of a :class:`~pipekit.PipelineState`:
one JSON object per line (JSONL), one line per transaction, committed or not.

Each line is appended with a single ``write()`` on a descriptor opened with
``O_APPEND`` and then made durable with ``fdatasync``, so a kill leaves whole
lines; a power loss may still leave a torn last line, which :func:`read_log`
skips (saying so at debug level), and the next append starts on a new line
so that it does not glue itself to the torn one.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import orjson

from .._atomic import fsync_dir
from .._private_files import FILE_MODE

__all__ = ["StateLogEntry", "append_entry", "read_log", "last_content_checksum"]

log = logging.getLogger("pipekit.state")

_MAX_ERROR = 2000  # characters of an error message kept in the log
_BLOCK = 64 * 1024


@attrs.frozen
class StateLogEntry:
    """One transaction as the log recorded it."""

    time: float  #: when it ended (seconds since the epoch)
    pid: int | None  #: None for ``external``
    host: str | None  #: None for ``external``
    #: ``transaction``, ``write``, ``restore``, or ``external``: a content
    #: that no logged transaction wrote (a writer killed between its commit
    #: and its log line, or an edit by hand), logged by the next transaction
    operation: str
    success: bool
    error: str | None = None  #: why it failed (None when it succeeded)
    bytes: int | None = None  #: size of the content written (None when nothing was)
    checksum: str | None = None  #: ``sha256:<hex>`` of the content written
    changed: bool = False  #: False for a transaction that left the data as it was
    backup: str | None = None  #: the backup made of the content it replaced
    restored_from: str | None = None  #: for ``restore``: the backup restored

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> StateLogEntry:
        names = {a.name for a in attrs.fields(cls)}
        return cls(**{k: v for k, v in doc.items() if k in names})


def append_entry(path: Path, entry: StateLogEntry, *, sync: bool = True) -> None:
    """Append ``entry`` as one line; durably unless ``sync`` is False (the
    caller then makes the line and, for a new log, its folder durable)."""
    doc = entry.to_json()
    if doc["error"] and len(doc["error"]) > _MAX_ERROR:
        doc["error"] = doc["error"][:_MAX_ERROR] + "..."
    line = orjson.dumps(doc) + b"\n"
    created = False
    try:
        fd = os.open(path, os.O_RDWR | os.O_APPEND)
    except FileNotFoundError:
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, FILE_MODE)
        created = True
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            line = b"\n" + line  # the last line is torn: leave it on its own
        if os.write(fd, line) != len(line):
            raise OSError(f"short write to {path}")
        if sync:
            getattr(os, "fdatasync", os.fsync)(fd)  # no fdatasync on macOS, Windows
    finally:
        os.close(fd)
    if created and sync:
        fsync_dir(path.parent)


def read_log(path: Path, limit: int | None = None) -> list[StateLogEntry]:
    """The newest ``limit`` entries (all when None), newest first."""
    out: list[StateLogEntry] = []
    for doc in _documents_backwards(path):
        if limit is not None and len(out) >= limit:
            break
        try:
            out.append(StateLogEntry.from_json(doc))
        except TypeError as exc:  # a foreign object: not an entry
            log.debug("%s: skipping a line that is not an entry: %s", path, exc)
    return out


def last_content_checksum(path: Path) -> str | None:
    """The checksum of the content the newest successful entry left (None
    when there is no such entry, or when it left no file)."""
    for doc in _documents_backwards(path):
        if doc.get("success") is True:
            checksum = doc.get("checksum")
            return checksum if isinstance(checksum, str) else None
    return None


def _documents_backwards(path: Path) -> Iterator[dict[str, Any]]:
    """The log's JSON objects, last first; lines that do not parse (a torn
    last line) are skipped, said at debug level."""
    try:
        fh = open(path, "rb")  # noqa: SIM115 (closed by the with below)
    except FileNotFoundError:
        return
    with fh:
        for line in _lines_backwards(fh):
            if not line.strip():
                continue
            try:
                doc = orjson.loads(line)
            except ValueError as exc:
                log.debug("%s: skipping a line that does not parse: %s", path, exc)
                continue
            if isinstance(doc, dict):
                yield doc


def _lines_backwards(fh: Any) -> Iterator[bytes]:
    """Each line, last first, reading the file backwards in blocks (a long
    log is not read whole)."""
    fh.seek(0, os.SEEK_END)
    pos = fh.tell()
    rest = b""
    while pos > 0:
        step = min(_BLOCK, pos)
        pos -= step
        fh.seek(pos)
        lines = (fh.read(step) + rest).split(b"\n")
        rest = lines[0]  # may continue in the previous block
        yield from reversed(lines[1:])
    if rest:
        yield rest
