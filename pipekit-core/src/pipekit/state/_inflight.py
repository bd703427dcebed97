"""An intent log of where a runner may leave temp files.

Before a run writes its first temp file into a folder, it notes the folder
in ``<state_dir>/inflight/<host>-<pid>.txt``; a run that ends normally
removes its note. A run that starts sweeps the folders named in other runs'
notes (:func:`pipekit._atomic.sweep_temp_files`: never a live writer's
temps) and removes the notes of runs that are gone (a dead process of this
host, or another host's note untouched for :data:`STALE_AFTER_S`). So a
killed run's temps go with the next run, even a no-op one. A damaged note
(a torn write) reads as absent, with a warning.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from pathlib import Path

from .._atomic import _HOST, STALE_AFTER_S, pid_runs, sweep_temp_files

__all__ = ["InflightLog"]

log = logging.getLogger("pipekit.inflight")


class InflightLog:
    def __init__(self, state_dir: Path) -> None:
        self.folder = state_dir / "inflight"
        self.path = self.folder / f"{_HOST}-{os.getpid()}.txt"
        self._noted: set[Path] = set()
        self._lock = threading.Lock()

    def note(self, folders: set[Path]) -> None:
        """Record that temp files may be written in ``folders``, and sweep
        what killed runs left there."""
        with self._lock:
            new = folders - self._noted
            if not new:
                return
            self.folder.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as f:
                f.write("".join(f"{os.fspath(p)}\n" for p in sorted(new)))
            self._noted |= new
        for path in sweep_temp_files(new):
            log.info("removed %s, left by a run that was killed", path)

    def close(self) -> None:
        with self._lock:
            if self._noted:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path)
                self._noted.clear()

    def recover(self) -> list[Path]:
        """Sweep the folders noted by other runs; remove the notes of runs
        that are gone; return the temp files removed."""
        try:
            names = os.listdir(self.folder)
        except FileNotFoundError:
            return []
        removed: list[Path] = []
        now = time.time()
        for name in names:
            note = self.folder / name
            if note == self.path:
                continue
            gone = _writer_gone(note, now)
            if gone is None:
                continue  # not a note
            folders = _read_note(note)
            if folders is not None:
                removed += sweep_temp_files(folders, now)
            if gone or folders is None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(note)
        return removed


def _writer_gone(note: Path, now: float) -> bool | None:
    """Whether the run that wrote ``note`` is gone: a dead process of this
    host, or another host's run whose note is untouched for
    :data:`STALE_AFTER_S`; None for a file that is not a note."""
    host, _, rest = note.name.rpartition("-")
    pid_text = rest.removesuffix(".txt")
    if not host or not pid_text.isdigit() or not rest.endswith(".txt"):
        return None
    if host == _HOST:
        return not pid_runs(int(pid_text))
    try:
        return now - note.stat().st_mtime > STALE_AFTER_S
    except FileNotFoundError:
        return None


def _read_note(note: Path) -> set[Path] | None:
    """The absolute folders a note names, or None (with a warning naming
    the file) for a damaged one: a torn write leaves random or NUL bytes."""
    try:
        text = note.read_bytes().decode("utf-8")
    except FileNotFoundError:
        return set()
    except (OSError, UnicodeDecodeError) as exc:
        log.warning("ignoring damaged in-flight note %s: %s", note, exc)
        return None
    lines = [line for line in text.splitlines() if line]
    if any("\0" in line or not os.path.isabs(line) for line in lines):
        log.warning("ignoring damaged in-flight note %s: not a list of folders", note)
        return None
    return {Path(line) for line in lines}
