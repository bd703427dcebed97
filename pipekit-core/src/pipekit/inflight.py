"""An intent log of where a runner may leave temp files.

Before a run writes its first temp file into a folder, it notes the folder
in ``<state_dir>/inflight/<host>-<pid>.txt``; a run that ends normally
removes its note. A run that starts and finds the note of a dead process of
this host sweeps the folders it names (see :func:`pipekit.atomic.sweep_temp_files`)
and removes the note. So temp files of killed runs are cleaned up by the next
run even when every stage is then up to date, and a no-op run pays only for
listing an empty folder.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from .atomic import _HOST, _alive, sweep_temp_files

__all__ = ["InflightLog"]


class InflightLog:
    def __init__(self, state_dir: Path) -> None:
        self.folder = state_dir / "inflight"
        self.path = self.folder / f"{_HOST}-{os.getpid()}.txt"
        self._noted: set[Path] = set()
        self._lock = threading.Lock()

    def note(self, folders: set[Path]) -> None:
        """Record that temp files may be written in ``folders``."""
        with self._lock:
            new = folders - self._noted
            if not new:
                return
            self.folder.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as f:
                f.write("".join(f"{os.fspath(p)}\n" for p in sorted(new)))
            self._noted |= new

    def close(self) -> None:
        with self._lock:
            if self._noted:
                try:
                    os.unlink(self.path)
                except FileNotFoundError:
                    pass
                self._noted.clear()

    def recover(self) -> list[Path]:
        """Sweep the folders noted by dead runs of this host; return the
        temp files removed."""
        try:
            names = os.listdir(self.folder)
        except FileNotFoundError:
            return []
        removed: list[Path] = []
        for name in names:
            host, _, rest = name.rpartition("-")
            pid_text = rest.removesuffix(".txt")
            if host != _HOST or not pid_text.isdigit():
                continue
            pid = int(pid_text)
            if pid == os.getpid() or _alive(pid):
                continue
            note = self.folder / name
            try:
                folders = {
                    Path(line) for line in note.read_text(encoding="utf-8").splitlines() if line
                }
            except FileNotFoundError:
                continue
            removed += sweep_temp_files(folders)
            try:
                os.unlink(note)
            except FileNotFoundError:
                pass
        return removed
