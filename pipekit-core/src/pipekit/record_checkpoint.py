"""Checkpoints of record stages, kept through :class:`pipekit.CheckpointManager`.

A record stage's checkpoint (input positions, output length, counters,
processor state) is one checkpoint of the manager over the stage's namespace
``<pipeline>.<stage>`` (the namespace ``ctx.checkpoint`` of a whole-stage
processor uses; a stage is one or the other), keeping only the newest. So it
gets what every checkpoint gets: a SHA-256 checked on load, the format
version, compression, an index written after the blob it names, and fencing
of each put with the stage lease's token. Its metadata holds the stage
fingerprint it was saved for and ``kind = "records"``: a checkpoint of
another fingerprint (the inputs, params or processor changed since) is never
returned.

Store calls run under :func:`pipekit.netguard.trusted`: the store is the
runner's (a Redis store must connect), even when the record loop that saves
runs inside a processor's network guard.
"""

from __future__ import annotations

import logging
from typing import Any

__all__ = ["RecordCheckpoint", "namespace_for", "RECORDS_KIND"]

log = logging.getLogger("pipekit.checkpoint")

RECORDS_KIND = "records"


def namespace_for(pipeline: str, stage: str) -> str:
    """The checkpoint namespace of a stage (see :func:`pipekit.stage.stage_namespace`)."""
    from .stage import stage_namespace

    return stage_namespace(pipeline, stage)


class RecordCheckpoint:
    """The checkpoint of one record stage execution (one fingerprint).

    ``save(state)`` stores a dict (positions, counters, processor state);
    ``load()`` returns the state saved for this fingerprint, or None: a
    checkpoint of another fingerprint, or a damaged one, is deleted with a
    warning that says why; ``peek()`` is ``load()`` without deleting or
    warning (for ``pipekit status``); ``clear()`` deletes it.
    ``fence`` is ``(lock key, fencing token)`` of the lease the writer holds.
    """

    def __init__(
        self,
        store: Any,
        namespace: str,
        fingerprint: str,
        *,
        fence: tuple[str, int] | None = None,
        label: str = "",
    ) -> None:
        self.store = store
        self.namespace = namespace
        self.fingerprint = fingerprint
        self.fence = fence
        self.label = label or namespace
        self._mgr: Any = None

    @property
    def manager(self) -> Any:
        if self._mgr is None:
            from .checkpoints import CheckpointManager

            self._mgr = CheckpointManager(
                self.store,
                self.namespace,
                retention={"keep_last": 1},
                compression=None,  # a few hundred bytes: neither compression
                deltas=False,  # nor a delta would pay
                fence=self.fence,
            )
        return self._mgr

    def save(self, state: dict[str, Any]) -> None:
        from .netguard import trusted

        with trusted():
            self.manager.save(
                state, metadata={"fingerprint": self.fingerprint, "kind": RECORDS_KIND}
            )

    def _read(self) -> tuple[dict[str, Any] | None, str | None]:
        """(state, None), (None, None) when there is none, or (None, why
        it cannot be used)."""
        from .netguard import trusted

        with trusted():
            if not self.store.list(self.namespace):  # the usual case: nothing to import
                return None, None
        from .checkpoints import CheckpointError, CheckpointNotFound

        try:
            with trusted():
                loaded = self.manager.load_info()
        except CheckpointNotFound:
            return None, None
        except CheckpointError as exc:
            return None, f"it is damaged ({exc})"
        meta = loaded.info.metadata or {}
        if meta.get("kind") != RECORDS_KIND or not isinstance(loaded.state, dict):
            return None, "it is not a record stage's checkpoint"
        if meta.get("fingerprint") != self.fingerprint:
            return None, "it was saved for other inputs, params or processor version"
        return loaded.state, None

    def peek(self) -> dict[str, Any] | None:
        try:
            state, _why = self._read()
        except Exception:
            return None
        return state

    def load(self) -> dict[str, Any] | None:
        state, why = self._read()
        if why is not None:
            self.discard(why)
        return state

    def discard(self, why: str) -> None:
        """Delete the checkpoint, saying why."""
        log.warning(
            "%s: discarding its checkpoint: %s; starting from the beginning", self.label, why
        )
        self.clear()

    def clear(self) -> None:
        from .netguard import trusted

        with trusted():
            if self.store.list(self.namespace):
                self.manager.clear()
