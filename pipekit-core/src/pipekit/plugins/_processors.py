"""The two base classes of stage processors, and the context a stage runs in (**contract**)."""

from __future__ import annotations

import logging
import re
import select
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import attrs

__all__ = ["Stage", "RecordStage", "StageContext", "Started", "Checkpoint", "stage_namespace"]


def stage_namespace(pipeline: str, stage: str) -> str:
    """The checkpoint namespace of a stage: ``<pipeline>.<stage>``, with any
    character a store id may not hold replaced by ``_``."""
    return re.sub(r"[^A-Za-z0-9_.:-]", "_", f"{pipeline}.{stage}")


class Checkpoint:
    """Resumable state of a whole-stage processor, kept in the checkpoint store.

    ``save(data)`` stores JSON-shaped data for this stage's current
    fingerprint; ``load()`` returns what was last saved, or ``None``. A
    checkpoint saved under another fingerprint (inputs or params changed) is
    never returned. The runner clears it when the stage commits.

    It is a :class:`pipekit.CheckpointManager` over the stage's namespace
    that keeps the newest checkpoint only (plus the bases its delta needs),
    with the fingerprint in each checkpoint's metadata; so saves are
    checksummed, compressed and, for large states, incremental. The store is
    the runner's: its calls are outside the network guard.
    """

    manager_options: ClassVar[dict[str, Any]] = {}
    """Options of the :class:`pipekit.CheckpointManager`, besides ``keep_last=1``."""

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
        self._mgr: Any = None

    @property
    def used(self) -> bool:
        """Whether the processor saved or loaded through this object."""
        return self._mgr is not None

    @property
    def manager(self) -> Any:
        """The :class:`pipekit.CheckpointManager` behind this checkpoint."""
        if self._mgr is None:
            from ..checkpoints import CheckpointManager

            self._mgr = CheckpointManager(
                self._store,
                self._namespace,
                retention={"keep_last": 1},
                fence=self._fence,
                **self.manager_options,
            )
        return self._mgr

    def metadata(self) -> dict[str, Any]:
        """What each save records beside the state: the fingerprint."""
        return {"fingerprint": self._fingerprint}

    def save(self, data: Any) -> None:
        from ..isolation._namespaces import trusted

        with trusted():
            self.manager.save(data, metadata=self.metadata())

    def load(self) -> Any:
        from ..checkpoints import CheckpointError, CheckpointNotFound
        from ..isolation._namespaces import trusted

        try:
            with trusted():
                loaded = self.manager.load_info()
        except CheckpointNotFound:
            return None
        except CheckpointError as exc:  # starting over is always safe
            logging.getLogger("pipekit.checkpoints").warning(
                "%s; the stage starts without its checkpoint", exc
            )
            return None
        if loaded.info.metadata.get("fingerprint") != self._fingerprint:
            return None
        return loaded.state

    def exists(self) -> bool:
        """Whether a checkpoint for this fingerprint is stored (read only:
        nothing is deleted, nothing is logged)."""
        from ..checkpoints import CheckpointError
        from ..isolation._namespaces import trusted

        try:
            with trusted():
                if not self._store.list(self._namespace):
                    return False
                info = self.manager.load_info().info
        except CheckpointError:
            return False
        return bool(info.metadata.get("fingerprint") == self._fingerprint)

    def clear(self) -> None:
        from ..isolation._namespaces import trusted

        with trusted():
            if self._store.list(self._namespace):  # usually not: nothing saved
                self.manager.clear()


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
    command_params: ClassVar[tuple[str, ...]] = ()
    """Names of params that hold shell commands: ``pipekit check`` looks in
    them for network programs (``curl``, ``ssh``, ...)."""
    handles_timeout: ClassVar[bool] = False
    """True when the processor stops its own work at ``ctx.timeout`` (e.g. by
    killing a subprocess); otherwise a stage with a timeout runs in a worker
    process that the runner can kill."""


class Stage(_ProcessorBase):
    """A whole-stage processor: it owns the work, reading ``ctx.inputs`` and
    writing ``ctx.outputs``."""

    def run(self, ctx: StageContext) -> None:  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__}.run() is not implemented")

    def start(self, ctx: StageContext) -> Started | None:
        """Optional: start the stage's work without waiting for it, and
        return a :class:`Started` that the runner watches, or ``None`` to
        have :meth:`run` called instead (the default).

        A processor whose work is a program it starts (``shell``) may
        implement this instead of :meth:`run`: the runner then waits for
        the work with :meth:`Started.wait`, which kills it at the stage's
        timeout or when the run is interrupted."""
        return None


class Started:
    """Work that :meth:`Stage.start` started. The runner calls
    :meth:`wait`, in the stage's worker thread: it waits on :meth:`fileno`
    and calls :meth:`poll` whenever it is readable, until ``poll`` returns
    True; then :meth:`finish`.

    Subclasses implement :meth:`fileno`, :meth:`poll`, :meth:`kill` and
    :meth:`finish`; :meth:`wait` is built on them."""

    def fileno(self) -> int:  # pragma: no cover - abstract
        """A descriptor that becomes readable when :meth:`poll` has
        something to do. It may change after a ``poll``: open the new one
        before closing the old, so that their numbers differ."""
        raise NotImplementedError

    def poll(self) -> bool:  # pragma: no cover - abstract
        """Do what is ready without blocking (read output, reap a child);
        True once the work has ended."""
        raise NotImplementedError

    def kill(self, reason: str) -> None:  # pragma: no cover - abstract
        """Stop the work now; ``reason`` is ``"timeout"`` or
        ``"cancelled"`` (the run was interrupted). :meth:`poll` then
        reports its end as usual, and :meth:`finish` raises."""
        raise NotImplementedError

    def finish(self) -> None:  # pragma: no cover - abstract
        """After :meth:`poll` returned True: raise if the attempt failed,
        as :meth:`Stage.run` would (e.g. :class:`pipekit.StageFailed`),
        and put what the stage record should keep in ``ctx.info``."""
        raise NotImplementedError

    TICK = 0.2
    """How often :meth:`wait` looks at ``cancelled`` while nothing happens."""

    def wait(self, deadline: float | None = None, cancelled: threading.Event | None = None) -> None:
        """Block until the work has ended, killing it at ``deadline`` (a
        ``time.monotonic()`` value) or when ``cancelled`` is set; then
        :meth:`finish`."""
        fired = ""
        poller = select.poll()
        fd = -1
        while True:
            timeout = self.TICK if cancelled is not None else None
            if deadline is not None and not fired:
                left = max(0.0, deadline - time.monotonic())
                timeout = left if timeout is None else min(timeout, left)
            if self.fileno() != fd:
                if fd >= 0:
                    poller.unregister(fd)
                fd = self.fileno()
                poller.register(fd, select.POLLIN)
            ready = poller.poll(None if timeout is None else timeout * 1000)
            if ready and self.poll():
                break
            if fired:
                continue
            if cancelled is not None and cancelled.is_set():
                fired = "cancelled"
            elif deadline is not None and time.monotonic() >= deadline:
                fired = "timeout"
            if fired:
                self.kill(fired)
        self.finish()


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
