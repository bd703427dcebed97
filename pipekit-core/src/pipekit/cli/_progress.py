"""Progress bars (rich, imported when the first is shown) for running record
stages: records read, records per second, input read, time left. Only on a
terminal, never with ``-q`` or ``--json``."""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from typing import Any

__all__ = ["ProgressDisplay", "wanted"]


def wanted(*, quiet: bool, json: bool) -> bool:
    """Whether ``pipekit run`` should show progress bars."""
    if quiet or json or os.environ.get("TERM") == "dumb":
        return False
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


class _Bar:
    __slots__ = ("_display", "_records0", "_t0", "_task", "closed")

    def __init__(self, display: ProgressDisplay, task: Any, records: int) -> None:
        self._display = display
        self._task = task
        self._records0 = records
        self._t0 = time.monotonic()
        self.closed = False

    def update(self, records: int, done: int) -> None:
        elapsed = time.monotonic() - self._t0
        rate = (records - self._records0) / elapsed if elapsed > 0.2 else 0.0
        progress = self._display._progress  # None once the display stopped
        if progress is not None:
            shown = f"{rate:,.0f} rec/s" if rate else ""
            progress.update(self._task, completed=done, records=records, rate=shown)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._display._end(self._task)


class ProgressDisplay:
    """rich progress bars on stderr; started with the first bar, stopped
    when the last one closes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._progress: Any = None
        self._bars = 0
        self._handlers: list[tuple[logging.StreamHandler[Any], Any]] = []

    def _start(self) -> None:
        from rich import progress as rich_progress
        from rich.console import Console

        text = rich_progress.TextColumn
        progress = rich_progress.Progress(
            text("[bold]{task.description}"),
            rich_progress.BarColumn(),
            rich_progress.TaskProgressColumn(),
            text("{task.fields[records]:>12,} records"),
            text("{task.fields[rate]:>16}"),
            rich_progress.TimeRemainingColumn(),
            console=Console(file=sys.stderr),
            transient=True,
            refresh_per_second=5,
            redirect_stdout=sys.stdout.isatty(),
            redirect_stderr=True,
        )
        original = sys.stderr
        progress.start()
        # pipekit's log lines go through rich too, above the bars
        for handler in logging.getLogger("pipekit").handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream is original:
                self._handlers.append((handler, handler.setStream(sys.stderr)))
        self._progress = progress

    def stage(self, name: str, total: int, done: int, records: int) -> _Bar:
        with self._lock:
            if self._progress is None:
                self._start()
            task = self._progress.add_task(
                name, total=total or None, completed=done, records=records, rate=""
            )
            self._bars += 1
        return _Bar(self, task, records)

    def _end(self, task: Any) -> None:
        with self._lock:
            if self._progress is None:
                return
            self._progress.remove_task(task)
            self._bars -= 1
            if self._bars == 0:
                self._stop()

    def _stop(self) -> None:
        progress, self._progress = self._progress, None
        for handler, stream in self._handlers:
            handler.setStream(stream)
        self._handlers.clear()
        progress.stop()

    def close(self) -> None:
        with self._lock:
            if self._progress is not None:
                self._stop()
