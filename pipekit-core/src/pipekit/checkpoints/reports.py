"""What the manager's read-only operations return."""

from __future__ import annotations

from typing import Any

import attrs

from .index import CheckpointInfo

__all__ = ["Loaded", "VerifyItem", "VerifyReport", "PruneResult", "CheckpointStats"]


@attrs.frozen
class Loaded:
    """A loaded state, the checkpoint it came from, and the newer ones that
    ``load()`` of the latest skipped because they failed verification
    (``(id, reason)``, newest first)."""

    state: Any
    info: CheckpointInfo
    skipped: list[tuple[str, str]] = attrs.field(factory=list)


@attrs.frozen
class VerifyItem:
    id: str
    seq: int
    ok: bool
    problem: str | None = None
    hidden: bool = False

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)


@attrs.frozen
class VerifyReport:
    """Per checkpoint: whether its blob verifies and its delta chain is
    whole. ``index_problem`` says when the index was damaged (it was then
    rebuilt from the blobs' headers); ``orphans`` are blobs no entry points
    at (left by an interrupted save; ``prune`` removes them); ``temps`` are
    temp files of puts a killed writer left in the store (``prune`` and the
    next save remove them)."""

    namespace: str
    items: list[VerifyItem]
    index_problem: str | None = None
    orphans: list[str] = attrs.field(factory=list)
    temps: list[str] = attrs.field(factory=list)

    @property
    def ok(self) -> bool:
        return self.index_problem is None and all(i.ok for i in self.items)

    @property
    def damaged(self) -> list[VerifyItem]:
        return [i for i in self.items if not i.ok]

    def to_json(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "ok": self.ok,
            "index_problem": self.index_problem,
            "orphans": list(self.orphans),
            "temps": list(self.temps),
            "checkpoints": [i.to_json() for i in self.items],
        }


@attrs.frozen
class PruneResult:
    namespace: str
    deleted: list[CheckpointInfo]
    orphans: list[str]
    dry_run: bool = False
    temps: list[str] = attrs.field(factory=list)
    """Temp files a killed writer left (removed unless ``dry_run``)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "dry_run": self.dry_run,
            "deleted": [e.id for e in self.deleted],
            "orphans": list(self.orphans),
            "temps": list(self.temps),
        }


@attrs.frozen
class CheckpointStats:
    namespace: str
    count: int
    hidden: int
    full: int
    delta: int
    size: int
    stored_size: int
    encrypted: int
    max_chain: int
    oldest: float | None
    newest: float | None

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)
