"""What a run reports: per-stage results, run info and the JSON summary."""

from __future__ import annotations

from typing import Any

import attrs

__all__ = ["StageResult", "RunInfo", "Decision", "RECORD_SUMMARY"]

RECORD_SUMMARY = (
    "records_in", "records_out", "records_failed", "records_retried", "records_dead_lettered",
    "resumed_from", "records_per_s", "input_bytes_read", "checkpoints",
)  # fmt: skip
"""The counters of a record stage that ``pipekit run --json`` shows."""


@attrs.define
class Decision:
    """Whether a stage is up to date, and why (or why not)."""

    stage: str
    run: bool
    reason: str
    fingerprint: str | None = None
    key: str | None = None
    inputs: dict[str, str] = attrs.field(factory=dict)
    """Input key -> content hash, when every input exists."""
    outputs: dict[str, str] = attrs.field(factory=dict)
    """Output key -> content hash recorded at the last commit (when up to date)."""
    manifests: dict[str, Any] = attrs.field(factory=dict)
    """Folder or glob key -> its entries (see ``pipekit.state._folders``)."""
    matches: dict[str, list[Any]] = attrs.field(factory=dict)
    """Glob key -> the paths it matched, sorted."""

    def input_paths(self, keys: list[str], paths: list[Any]) -> list[Any]:
        """A stage's inputs for its processor: each glob replaced by its matches."""
        if not self.matches:
            return list(paths)
        out: list[Any] = []
        for key, path in zip(keys, paths):
            out.extend(self.matches.get(key, [path]))
        return out


@attrs.define
class StageResult:
    name: str
    status: str  # ok | skipped | failed
    duration_s: float = 0.0
    reason: str = ""
    attempts: int = 0
    key: str | None = None
    fingerprint: str | None = None
    error: str | None = None
    info: dict[str, Any] = attrs.field(factory=dict)
    network: str | None = None
    """How the stage's processor met the network: ``guarded``, ``isolated``,
    ``unguarded`` or ``allowed`` (None: it did not run)."""

    def record(self) -> dict[str, Any]:
        """The stage's entry in the run record: every field (``info`` not copied)."""
        return attrs.asdict(self, recurse=False)

    def summary(self) -> dict[str, Any]:
        """The stage's entry in ``pipekit run --json``: the **contract** keys
        ``name``, ``status``, ``duration_s``, ``reason``; a record stage that
        ran adds ``records`` (its counters) as an extra, and ``network`` is extra."""
        out: dict[str, Any] = {
            "name": self.name,
            "status": self.status,
            "duration_s": round(self.duration_s, 6),
            "reason": self.reason,
        }
        if self.network is not None:
            out["network"] = self.network
        if "records_in" in self.info:
            out["records"] = {k: self.info.get(k) for k in RECORD_SUMMARY if k in self.info}
        return out


@attrs.define
class RunInfo:
    """Given to observer hooks: the run as it goes."""

    run_id: str
    pipeline: str
    file: str
    stages: list[str]
    backend: str
    jobs: int
    started_at: float
