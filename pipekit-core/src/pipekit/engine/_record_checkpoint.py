"""Checkpoints of record stages: a :class:`pipekit.Checkpoint` over the
stage's namespace ``<pipeline>.<stage>`` (a stage is a record stage or a
whole-stage processor, never both), so each gets what every checkpoint gets:
a SHA-256 checked on load, compression, an index written after the blob it
names, and fencing of each put with the stage lease's token. Its metadata
holds the stage fingerprint and ``kind = "records"``: a checkpoint of another
fingerprint (the inputs, params or processor changed since) is never returned.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from ..plugins._processors import Checkpoint
from ..plugins._processors import stage_namespace as namespace_for

__all__ = ["RecordCheckpoint", "namespace_for", "RECORDS_KIND"]

log = logging.getLogger("pipekit.checkpoint")

RECORDS_KIND = "records"


class RecordCheckpoint(Checkpoint):
    """The checkpoint of one record stage execution (one fingerprint): a dict
    of positions, counters and processor state. ``load()`` deletes a
    checkpoint of another fingerprint, or a damaged one, saying why.
    ``fence`` is ``(lock key, fencing token)`` of the lease the writer holds.
    """

    manager_options: ClassVar[dict[str, Any]] = {"compression": None, "deltas": False}
    """A few hundred bytes: neither compression nor a delta would pay."""

    def __init__(
        self,
        store: Any,
        namespace: str,
        fingerprint: str,
        *,
        fence: tuple[str, int] | None = None,
        label: str = "",
    ) -> None:
        super().__init__(store, namespace, fingerprint, fence=fence)
        self.namespace = namespace
        self.fence = fence
        self.label = label or namespace

    def metadata(self) -> dict[str, Any]:
        return {"fingerprint": self._fingerprint, "kind": RECORDS_KIND}

    def _read(self) -> tuple[dict[str, Any] | None, str | None]:
        """(state, None), (None, None) when there is none, or (None, why
        it cannot be used)."""
        from ..isolation._namespaces import trusted

        with trusted():
            if not self._store.list(self.namespace):  # the usual case: nothing to import
                return None, None
            from ..checkpoints import CheckpointError, CheckpointNotFound

            try:
                loaded = self.manager.load_info()
            except CheckpointNotFound:
                return None, None
            except CheckpointError as exc:
                return None, f"it is damaged ({exc})"
        meta = loaded.info.metadata or {}
        if meta.get("kind") != RECORDS_KIND or not isinstance(loaded.state, dict):
            return None, "it is not a record stage's checkpoint"
        if meta.get("fingerprint") != self._fingerprint:
            return None, "it was saved for other inputs, params or processor version"
        return loaded.state, None

    def peek(self) -> dict[str, Any] | None:
        """:meth:`load` without deleting or warning (for ``pipekit status``)."""
        try:
            return self._read()[0]
        except Exception:
            return None

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
