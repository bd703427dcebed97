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

    ``save(data)`` stores JSON-shaped data (or bytes) for this stage's current
    fingerprint; ``load()`` returns what was last saved, or ``None``. A
    checkpoint saved under another fingerprint (inputs or params changed) is
    never returned. The runner clears it when the stage commits.
    """

    def __init__(
        self,
        store: Any,
        namespace: str,
        fingerprint: str,
        *,
        fence: tuple[str, int] | None = None,
    ) -> None:
        self._store = store
        self._namespace = namespace
        self._fingerprint = fingerprint
        self._fence = fence
        """(lock key, fencing token) of the stage's lease: a store that
        tracks fencing refuses a save from a holder whose lease was taken over."""

    def save(self, data: Any) -> None:
        from . import _json

        payload = {"fingerprint": self._fingerprint, "data": data}
        if self._fence is None:
            self._store.put(self._namespace, "stage", _json.dumps(payload))
        else:
            self._store.put(self._namespace, "stage", _json.dumps(payload), fence=self._fence)

    def load(self) -> Any:
        from . import _json

        raw = self._store.get(self._namespace, "stage")
        if raw is None:
            return None
        payload = _json.loads(raw)
        if payload.get("fingerprint") != self._fingerprint:
            return None
        return payload.get("data")

    def clear(self) -> None:
        self._store.delete(self._namespace, "stage")


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

    def process(self, record: Any, params: Any) -> Iterable[Any]:  # pragma: no cover
        raise NotImplementedError(f"{type(self).__name__}.process() is not implemented")

    def iter_process(self, record: Any, params: Any) -> Iterator[Any]:
        out = self.process(record, params)
        if out is None:
            return iter(())
        if isinstance(out, (str, bytes, dict)):
            return iter((out,))
        return iter(out)
