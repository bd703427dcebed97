"""Per-run records, written as the run goes.

    <state_dir>/runs/<run_id>.jsonl   the journal: a ``start`` line when the
                                      run starts, a ``stage`` line per ended
                                      stage (buffered, written at most every
                                      :data:`FLUSH_EVERY_S`)
    <state_dir>/runs/<run_id>.json    the whole record, when the run ends;
                                      its journal is then removed

A run killed mid-way (SIGKILL, power loss) leaves its journal: its header
and the stages that ended. Nothing here is fsynced: a record reports, it
never decides. A record's mtime is its run's start time (a journal's: its
last write), so the newest :data:`KEEP_RUNS` are kept without reading them.
Reading them back: :mod:`._run_history`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path
from typing import Any

from .. import _json
from .._atomic import TEMP_MARK, atomic_write_bytes
from .._private_files import FILE_MODE, make_private_dir

__all__ = ["RunJournal", "write_run_record", "iso_utc", "KEEP_RUNS", "FLUSH_EVERY_S"]
__all__ += ["RECORD_SUFFIX", "JOURNAL_SUFFIX", "SCHEMA_VERSION"]

log = logging.getLogger("pipekit.runner")

KEEP_RUNS = 200
FLUSH_EVERY_S = 0.5
RECORD_SUFFIX = ".json"
JOURNAL_SUFFIX = ".jsonl"
SCHEMA_VERSION = 2
"""Of a run record: 2 has ISO 8601 UTC times, the journal and each stage's
``started_at``, ``ended_at``, ``slot`` and ``host``; 1 (no field) had Unix times."""


_SECONDS: dict[int, str] = {}
"""Whole seconds already formatted: the stages of a run end within a few."""


def iso_utc(when: float) -> str:
    """``when`` (Unix time) as ISO 8601 UTC to the millisecond:
    ``2026-12-08T00:35:38.123Z``."""
    seconds, millis = divmod(int(when * 1000), 1000)
    prefix = _SECONDS.get(seconds)
    if prefix is None:
        if len(_SECONDS) >= 4096:
            _SECONDS.clear()
        prefix = _SECONDS[seconds] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    return f"{prefix}.{millis:03d}Z"


class RunJournal:
    """The journal of one run. ``start`` writes its header at once;
    ``add`` keeps a line, written by ``flush_if_due`` (the scheduler calls
    it as it loops) at most every :data:`FLUSH_EVERY_S`; ``finish`` writes
    the whole record and removes the journal. Called from one thread."""

    def __init__(self, state_dir: Path, run_id: str) -> None:
        self.folder = state_dir / "runs"
        self.run_id = run_id
        self.path = self.folder / f"{run_id}{JOURNAL_SUFFIX}"
        self.pending: list[Any] = []
        self.fd: int | None = None
        self.last_flush = 0.0

    def start(self, header: dict[str, Any]) -> None:
        """Create the journal (an id in use is refused: ``FileExistsError``)
        and write its header line."""
        make_private_dir(self.folder)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW
        self.fd = os.open(self.path, flags, FILE_MODE)
        self._write([{"event": "start", "schema_version": SCHEMA_VERSION, **header}])

    def add(self, entry: Any) -> None:
        """Keep a stage's entry (a dict, or an object with ``record()``),
        to be written by the next due flush."""
        if self.fd is not None:
            self.pending.append(entry)

    def due_in(self) -> float | None:
        """Seconds until the pending lines are due (None: nothing pending)."""
        if not self.pending:
            return None
        return max(0.0, self.last_flush + FLUSH_EVERY_S - time.monotonic())

    def flush_if_due(self) -> None:
        if self.pending and time.monotonic() - self.last_flush >= FLUSH_EVERY_S:
            self.flush()

    def flush(self) -> None:
        entries, self.pending = self.pending, []
        lines = [{"event": "stage", **_entry(e)} for e in entries]
        self._write(lines)

    def _write(self, lines: list[dict[str, Any]]) -> None:
        if self.fd is None or not lines:
            return
        data = b"".join(_json.dumps(line) + b"\n" for line in lines)
        try:
            while data:
                data = data[os.write(self.fd, data) :]
        except OSError as exc:  # a full disk: the run goes on; its final record is tried
            log.warning("run record %s: %s; not written as the run goes", self.path, exc)
            self.close()
        self.last_flush = time.monotonic()

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def finish(self, record: dict[str, Any], started_at: float, keep: int = KEEP_RUNS) -> Path:
        """Write the whole record (its lines still pending are in it) and
        remove the journal; keep the ``keep`` newest records."""
        self.pending = []
        self.close()
        path = write_run_record(self.folder.parent, record, started_at, keep)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        return path


def _entry(entry: Any) -> dict[str, Any]:
    return entry if isinstance(entry, dict) else entry.record()


def write_run_record(
    state_dir: Path, record: dict[str, Any], started_at: float, keep: int = KEEP_RUNS
) -> Path:
    """Write a run's whole record, its mtime set to ``started_at``, and
    keep only the ``keep`` newest records."""
    folder = state_dir / "runs"
    path = folder / f"{record['run_id']}{RECORD_SUFFIX}"
    make_private_dir(folder)
    document = {"schema_version": SCHEMA_VERSION, **record}
    atomic_write_bytes(path, _json.dumps(document, indent=True), durable=False, mode=FILE_MODE)
    os.utime(path, (started_at, started_at))
    prune(folder, keep)
    return path


def prune(folder: Path, keep: int) -> None:
    """Remove all but the ``keep`` newest records and journals (by mtime:
    their start time)."""
    with os.scandir(folder) as entries:
        names = [
            entry.name
            for entry in entries
            if entry.name.endswith((RECORD_SUFFIX, JOURNAL_SUFFIX)) and TEMP_MARK not in entry.name
        ]
    if len(names) <= keep:  # the usual case: no stat
        return
    found = []
    for name in names:
        with contextlib.suppress(FileNotFoundError):
            found.append((os.stat(folder / name).st_mtime, name))
    found.sort(reverse=True)
    for _, name in found[keep:]:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(folder / name)
