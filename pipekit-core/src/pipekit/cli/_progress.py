"""What ``pipekit run`` shows on a terminal while it runs: a status line
("3 of 12 stages done, 2 running: fetch, parse") and a progress bar per
running record stage (records read, records per second, input read, time
left). rich is imported when the first stage starts, so that a run with
nothing to do does not pay for it. Only on a terminal, never with ``-q``,
``--json`` or ``--log-format json``."""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from typing import Any, TextIO

__all__ = ["ProgressDisplay", "wanted", "colour_wanted"]


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def wanted(*, quiet: bool, json: bool, json_log: bool = False) -> bool:
    """Whether ``pipekit run`` should show the status line and the bars."""
    if quiet or json or json_log or os.environ.get("TERM") == "dumb":
        return False
    return _is_terminal(sys.stderr)


def colour_wanted(stream: TextIO) -> bool:
    """Whether to colour words written to ``stream``: on a terminal, unless
    ``NO_COLOR`` is set to anything (https://no-color.org) or ``TERM=dumb``."""
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    return _is_terminal(stream)


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
        shown = f"{rate:,.0f} rec/s" if rate else ""
        bars = self._display._bars
        if bars is not None and self._task is not None:
            bars.update(self._task, completed=done, records=records, rate=shown)

    def close(self) -> None:
        bars = self._display._bars
        if not self.closed and bars is not None and self._task is not None:
            bars.remove_task(self._task)
        self.closed = True


class ProgressDisplay:
    """A rich ``Live`` display on stderr, started when the first stage
    starts and stopped by :meth:`close`. ``started`` and ``finished`` may
    be called from any thread."""

    def __init__(self, total: int) -> None:
        self._total = total
        self._done = 0
        self._running: dict[str, None] = {}  # in the order they started
        self._lock = threading.Lock()  # the counts above; held briefly
        self._start_lock = threading.Lock()  # starting and stopping the display
        self._live: Any = None
        self._bars: Any = None
        self._closed = False
        self._handlers: list[tuple[logging.StreamHandler[Any], Any]] = []

    def started(self, name: str) -> None:
        with self._lock:
            self._running[name] = None
        self._ensure_started()

    def finished(self, name: str) -> None:
        with self._lock:
            self._done += 1
            self._running.pop(name, None)

    def stage(self, name: str, total: int, done: int, records: int) -> _Bar:
        """A progress bar for a record stage (closed by the stage)."""
        self._ensure_started()
        task = None  # none once the display is closed
        if self._bars is not None and not self._closed:
            task = self._bars.add_task(
                name, total=total or None, completed=done, records=records, rate=""
            )
        return _Bar(self, task, records)

    def status(self) -> str:
        """The status line: how many stages are done, and which run."""
        with self._lock:
            done, running = self._done, list(self._running)
        line = f"{done} of {self._total} stages done, {len(running)} running"
        return f"{line}: {', '.join(running)}" if running else line

    def _render(self) -> Any:
        from rich.console import Group
        from rich.text import Text

        line = Text(self.status(), style="bold", no_wrap=True, overflow="ellipsis")
        return Group(line, self._bars) if self._bars.tasks else line

    def _ensure_started(self) -> None:
        with self._start_lock:
            if self._live is None and not self._closed:
                self._start()

    def _start(self) -> None:
        from rich import progress as rich_progress
        from rich.console import Console
        from rich.live import Live

        text = rich_progress.TextColumn
        self._bars = rich_progress.Progress(
            text("[bold]{task.description}"),
            rich_progress.BarColumn(),
            rich_progress.TaskProgressColumn(),
            text("{task.fields[records]:>12,} records"),
            text("{task.fields[rate]:>16}"),
            rich_progress.TimeRemainingColumn(),
        )
        live = Live(
            get_renderable=self._render,
            console=Console(file=sys.stderr),
            transient=True,
            refresh_per_second=4,
            redirect_stdout=_is_terminal(sys.stdout),
            redirect_stderr=True,
        )
        original = sys.stderr
        live.start(refresh=True)  # drawn now, with the stage that started it
        # pipekit's log lines go through rich too, above the display
        for handler in logging.getLogger("pipekit").handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream is original:
                self._handlers.append((handler, handler.setStream(sys.stderr)))
        self._live = live

    def close(self) -> None:
        with self._start_lock:
            self._closed = True
            live, self._live = self._live, None
            if live is None:
                return
            for handler, stream in self._handlers:
                handler.setStream(stream)
            self._handlers.clear()
            live.stop()
