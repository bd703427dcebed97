"""Human output of ``pipekit run``: a line per stage as it finishes."""

from __future__ import annotations

import sys
import threading
from typing import Any, TextIO

from ..engine._results import StageResult

__all__ = ["Reporter"]


class Reporter:
    """``stream`` None: write to whatever ``sys.stdout`` is at the time (so
    that lines go above the progress bars while they are shown)."""

    def __init__(self, stream: TextIO | None, *, enabled: bool = True) -> None:
        self._stream = stream
        self.enabled = enabled
        self._lock = threading.Lock()
        self._width = 10
        self._quiet_skips = 0

    @property
    def stream(self) -> TextIO:
        return self._stream if self._stream is not None else sys.stdout

    def start(self, pipeline: Any, runner: Any) -> None:
        self._width = max((len(n) for n in pipeline.order), default=10)
        self._many = len(pipeline.order) > 50
        if self.enabled:
            self.stream.write(
                f"pipekit: run {runner.run_id} of {pipeline.name} "
                f"({len(pipeline.order)} stages, backend {runner.backends.name}, "
                f"jobs {runner.options.jobs})\n"
            )

    def stage(self, result: StageResult) -> None:
        if not self.enabled:
            return
        if self._many and result.status == "skipped" and result.reason.startswith("up to date"):
            self._quiet_skips += 1  # a big unchanged pipeline says so in one line
            return
        detail = result.reason
        if result.status == "ok":
            detail = f"{result.duration_s:.2f}s  ({result.reason})"
        dead = result.info.get("records_dead_lettered")
        if dead:
            detail += f"  [{dead} record(s) dead-lettered: pipekit dlq list --stage {result.name}]"
        with self._lock:
            self.stream.write(f"  {result.status:<8} {result.name:<{self._width}}  {detail}\n")

    def end(self, outcome: Any) -> None:
        if not self.enabled:
            return
        m = outcome.metrics
        if self._quiet_skips:
            self.stream.write(f"  skipped  {self._quiet_skips} stage(s) up to date\n")
        self.stream.write(
            f"run {outcome.status}: {m['stages_ok']} ok, {m['stages_skipped']} skipped, "
            f"{m['stages_failed']} failed in {outcome.duration_s:.2f}s\n"
        )
        self.stream.flush()
