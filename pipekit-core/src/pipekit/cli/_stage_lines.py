"""Human output of ``pipekit run``: a line per stage as it finishes, and a
line for a stage still running after a while (``PIPEKIT_SHOW_RUNNING_AFTER``
seconds, 2 by default; 0: a line for every stage as it starts)."""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any, TextIO

from ..engine._results import StageResult
from ..errors import ConfigError
from ._common import stdout_gone

__all__ = ["Reporter", "running_after"]

_COLOURS = {"ok": "\x1b[32m", "failed": "\x1b[1;31m"}
_RESET = "\x1b[0m"


def running_after() -> float:
    """Seconds after which a running stage gets a line (from the environment)."""
    value = os.environ.get("PIPEKIT_SHOW_RUNNING_AFTER", "")
    if not value:
        return 2.0
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < float("inf"):
        raise ConfigError(f"PIPEKIT_SHOW_RUNNING_AFTER={value!r}: a number of seconds, 0 or more")
    return seconds


class Reporter:
    """``stream`` None: write to whatever ``sys.stdout`` is at the time (so
    that lines go above the live display while it is shown). ``display``:
    the terminal's live status (see ``_progress``), told of every start
    and end."""

    def __init__(
        self,
        stream: TextIO | None,
        *,
        enabled: bool = True,
        display: Any = None,
        colour: bool = False,
        after: float = 2.0,
    ) -> None:
        self._stream = stream
        self.enabled = enabled
        self._display = display
        self._colour = colour
        self._after = after
        self._lock = threading.Lock()
        self._width = 10
        self._many = False
        self._quiet_skips = 0
        self._running: dict[str, float] = {}  # name -> start; gone once it has its line
        self._ticker: threading.Thread | None = None
        self._stop = threading.Event()

    @property
    def stream(self) -> TextIO:
        return self._stream if self._stream is not None else sys.stdout

    def start(self, pipeline: Any, runner: Any) -> None:
        self._width = max((len(n) for n in pipeline.order), default=10)
        self._many = len(pipeline.order) > 50
        self._write(
            f"pipekit: run {runner.run_id} of {pipeline.name} "
            f"({len(pipeline.order)} stages, backend {runner.backends.name}, "
            f"jobs {runner.options.jobs})\n"
        )

    def started(self, name: str) -> None:
        """A stage starts to execute: its line now, or when it has run long."""
        if self._display is not None:
            self._display.started(name)
        if not self.enabled:
            return
        if self._after == 0:
            self._line("running", name, "...")
            return
        with self._lock:
            self._running[name] = time.monotonic()
            if self._ticker is None:
                self._ticker = threading.Thread(target=self._watch, daemon=True)
                self._ticker.start()

    def _watch(self) -> None:
        """Give each stage running longer than ``after`` seconds its line."""
        while not self._stop.wait(min(0.5, self._after)):
            now = time.monotonic()
            with self._lock:
                due = [n for n, t in self._running.items() if now - t >= self._after]
                for name in due:
                    del self._running[name]
            for name in due:
                self._line("running", name, "...")

    def stage(self, result: StageResult) -> None:
        if self._display is not None:
            self._display.finished(result.name)
        if not self.enabled:
            return
        if self._running:  # (no lock taken on a run's skips)
            with self._lock:
                self._running.pop(result.name, None)
        if self._many and result.status == "skipped" and result.reason_code == "up_to_date":
            self._quiet_skips += 1  # a big unchanged pipeline says so in one line
            return
        detail = result.reason
        if result.status == "ok":
            detail = f"{result.duration_s:.2f}s  ({result.reason})"
        dead = result.info.get("records_dead_lettered")
        if dead:
            detail += f"  [{dead} record(s) dead-lettered: pipekit dlq list --stage {result.name}]"
        self._line(result.status, result.name, detail)

    def _line(self, status: str, name: str, detail: str) -> None:
        word = f"{status:<8}"
        if self._colour and status in _COLOURS:
            word = f"{_COLOURS[status]}{status}{_RESET}{' ' * (8 - len(status))}"
        self._write(f"  {word} {name:<{self._width}}  {detail}\n")

    def _write(self, text: str) -> None:
        """A line, unless stdout's reader went away (``pipekit run | head``):
        then no more lines, and the run goes on."""
        with self._lock:
            if not self.enabled:
                return
            try:
                self.stream.write(text)
            except BrokenPipeError:
                self.enabled = False
                stdout_gone()

    def close(self) -> None:
        """No more lines for running stages (the run is over)."""
        self._stop.set()

    def end(self, outcome: Any) -> None:
        self.close()
        if not self.enabled:
            return
        m = outcome.metrics
        if self._quiet_skips:
            self._write(f"  skipped  {self._quiet_skips} stage(s) up to date\n")
        self._write(
            f"run {outcome.status}: {m['stages_ok']} ok, {m['stages_skipped']} skipped, "
            f"{m['stages_failed']} failed in {outcome.duration_s:.2f}s\n"
        )
        if self.enabled:
            self.stream.flush()
