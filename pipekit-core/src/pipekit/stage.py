"""The two base classes of stage processors, and the context a stage runs in (**contract**)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import attrs

__all__ = ["Stage", "RecordStage", "StageContext", "Checkpoint"]


class Checkpoint:
    """Resumable state of a whole-stage processor, kept in the checkpoint store.

    ``save(data)`` stores JSON-shaped data for this stage's current
    fingerprint; ``load()`` returns what was last saved, or ``None``. A
    checkpoint saved under another fingerprint (inputs, params or processor
    version changed) is never returned. The runner clears it when the stage
    commits, so a stage that succeeded starts its next execution afresh.
    """

    def __init__(
        self,
        store: Any,
        namespace: str,
        fingerprint: str,
        *,
        fence: tuple[str, int] | None = None,
    ) -> None:
        from .record_checkpoint import STAGE_ID, RecordCheckpoint

        self._cp = RecordCheckpoint(store, namespace, fingerprint, fence=fence, id=STAGE_ID)
        self._namespace = namespace
        self._fingerprint = fingerprint
        self._fence = fence

    def save(self, data: Any) -> None:
        self._cp.save({"data": data})

    def load(self) -> Any:
        state = self._cp.load()
        return None if state is None else state.get("data")

    def clear(self) -> None:
        self._cp.clear()


@attrs.define(eq=False)
class StageContext:
    """What a processor gets while its stage runs.

    ``outputs`` are temporary paths beside the final ones: write there; the
    runner fsyncs and renames them into place only when the stage succeeds.
    """

    stage_name: str
    run_id: str
    inputs: list[Path]
    outputs: list[Path]
    params: Any
    log: logging.Logger
    checkpoint: Checkpoint | None = None
    final_outputs: list[Path] = attrs.field(factory=list)
    attempt: int = 1
    workdir: Path = attrs.field(factory=Path.cwd)
    info: dict[str, Any] = attrs.field(factory=dict)
    """Free-form facts a processor wants kept in the stage record (e.g. stderr)."""
    timeout: float | None = None
    """Seconds this attempt may take (None: no limit). Processors that set
    ``handles_timeout = True`` enforce it themselves; others run in a worker
    process that the runner kills when time is up."""
    cancelled: threading.Event = attrs.field(factory=threading.Event)
    """Set when the run is interrupted: long work should stop soon."""


class _ProcessorBase:
    name: ClassVar[str]
    version: ClassVar[str] = "1"
    Params: ClassVar[type | None] = None
    non_retryable: ClassVar[tuple[type[BaseException], ...]] = ()
    """Exception types that retrying cannot fix (besides ``pipekit.NonRetryable``)."""
    handles_timeout: ClassVar[bool] = False
    """True when the processor stops its own work at ``ctx.timeout`` (e.g. by
    killing a subprocess); otherwise a stage with a timeout runs in a worker
    process that the runner can kill."""


class Stage(_ProcessorBase):
    """A whole-stage processor: it owns the work, reading ``ctx.inputs`` and
    writing ``ctx.outputs``."""

    def run(self, ctx: StageContext) -> None:  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__}.run() is not implemented")


class RecordStage(_ProcessorBase):
    """A per-record processor: the framework reads the inputs as records,
    calls :meth:`process` for each and writes what it yields to the single
    output.

    ``format`` is ``"lines"`` (records are ``str`` lines without their
    newline; bytes that are not UTF-8 pass through unchanged) or ``"jsonl"``
    (records are parsed JSON values; yielded values are written as JSON).
    """

    format: ClassVar[str] = "lines"

    def checkpoint_state(self) -> Any:
        """Optional: the processor's state to keep in each checkpoint, as a
        JSON-shaped value, when its output depends on records seen before
        (a running total, a set of keys seen). Called between records."""
        return None

    def restore_state(self, state: Any) -> None:
        """Optional: take back the state that :meth:`checkpoint_state`
        returned, or ``None`` when the stage starts from its first record.

        A processor that overrides it runs on a private shallow copy of the
        registered instance for each stage execution, so state kept on
        ``self`` (set here, not in ``__init__``) is the execution's own."""

    def process(self, record: Any, params: Any) -> Iterable[Any]:  # pragma: no cover
        raise NotImplementedError(f"{type(self).__name__}.process() is not implemented")

    def iter_process(self, record: Any, params: Any) -> Iterator[Any]:
        out = self.process(record, params)
        if out is None:
            return iter(())
        if isinstance(out, (str, bytes, dict)):
            return iter((out,))
        return iter(out)
