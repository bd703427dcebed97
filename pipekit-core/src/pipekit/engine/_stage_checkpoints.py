"""A stage's checkpoints, as the runner makes and clears them: the
whole-stage :class:`pipekit.Checkpoint` and a record stage's
:class:`~pipekit.engine._record_checkpoint.RecordCheckpoint`, both in the stage's
namespace of the checkpoint store."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from ..isolation._namespaces import trusted
from ..plugins._processors import Checkpoint, stage_namespace
from ..stores._protocols import CheckpointStore, Lease
from ._record_checkpoint import RecordCheckpoint
from ._results import Decision

if TYPE_CHECKING:
    from ..plan._pipeline import PlannedStage

__all__ = ["StageCheckpoints", "fence_of"]


def fence_of(lease: Lease | None) -> tuple[str, int] | None:
    """``(lock key, fencing token)`` of a lease, when it has a token."""
    if lease is None or lease.token is None:
        return None
    return (lease.key, lease.token)


class StageCheckpoints:
    def __init__(self, pipeline_name: str, store: CheckpointStore) -> None:
        self.pipeline_name = pipeline_name
        self.store = store

    def namespace(self, stage: PlannedStage) -> str:
        return stage_namespace(self.pipeline_name, stage.name)

    def whole_stage(
        self, stage: PlannedStage, decision: Decision, lease: Lease | None = None
    ) -> Checkpoint:
        return Checkpoint(
            self.store, self.namespace(stage), decision.fingerprint or "", fence=fence_of(lease)
        )

    def records(
        self, stage: PlannedStage, decision: Decision, lease: Lease | None = None
    ) -> RecordCheckpoint:
        return RecordCheckpoint(
            self.store,
            self.namespace(stage),
            decision.fingerprint or "",
            fence=fence_of(lease),
            label=f"stage {stage.name}",
        )

    @functools.cached_property
    def _namespaces_at_start(self) -> set[str] | None:
        """The store's namespaces when first asked (None: it cannot list them)."""
        lister = getattr(self.store, "namespaces", None)
        if lister is None:
            return None
        with trusted():
            return set(lister())

    def clear(self, stage: PlannedStage, decision: Decision, touched: bool = True) -> None:
        """Remove a committed stage's checkpoints. ``touched`` False: this
        attempt neither saved nor loaded one, so there is one only if the
        namespace was there when the run first looked (one listing of the
        store per run instead of one per stage)."""
        namespace = self.namespace(stage)
        with trusted():
            seen = None if touched else self._namespaces_at_start
            if seen is not None and namespace not in seen:
                return
            if not self.store.list(namespace):
                return
        self.whole_stage(stage, decision).clear()
        self.records(stage, decision).clear()
