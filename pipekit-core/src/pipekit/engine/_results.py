"""What a run reports: per-stage results, run info and the JSON summary."""

from __future__ import annotations

import os
from typing import Any

import attrs

from ..state._run_records import iso_utc

__all__ = ["StageResult", "RunInfo", "Decision", "RECORD_SUMMARY", "REASON_CODES", "HOST"]

HOST = os.uname().nodename

RECORD_SUMMARY = (
    "records_in", "records_out", "records_failed", "records_retried", "records_dead_lettered",
    "resumed_from", "records_per_s", "input_bytes_read", "checkpoints",
)  # fmt: skip
"""The counters of a record stage that ``pipekit run --json`` shows."""

REASON_CODES = {
    "up_to_date": "its outputs are what its last run of the same inputs, params and processor wrote",
    "never_ran": "the state has no entry for it: it never ran here",
    "forced": "--force named it (or all)",
    "input_missing": "an input does not exist (the stage fails)",
    "input_unusable": "an input or output is not what the pipeline declares: a folder where a file is, a glob that matches nothing, an unreadable file (the stage fails)",
    "input_changed": "an input's content changed",
    "input_list_changed": "the list of its inputs changed",
    "params_changed": "its params changed",
    "processor_changed": "it uses another processor",
    "version_changed": "its processor's version changed",
    "code_changed": "the source file of its processor, a module of the project, changed",
    "output_missing": "an output it wrote is gone",
    "output_modified": "an output it wrote was modified since",
    "output_list_changed": "the list of its outputs changed",
    "did_not_finish": "its last run did not finish (it may resume from a checkpoint)",
    "no_record": "the idempotency store has no record of its last success",
    "upstream_will_run": "a stage it depends on will run (status and --dry-run only)",
    "failed": "its processor failed on every attempt",
    "interrupted": "the run was interrupted while it ran",
    "commit_failed": "its work was done but could not be committed",
    "lock_timeout": "its lock was held by another run longer than --lock-timeout",
    "error": "an error outside its processor's work (a full disk, an unreachable backend)",
    "upstream_failed": "not run: a stage it depends on failed",
    "not_run": "not run: the run stopped after a failure (without --keep-going)",
    "run_interrupted": "not run: the run was interrupted before it",
}  # fmt: skip
"""Every ``reason_code`` a stage's result or status can carry (a stable
word beside the prose ``reason``), with what it means."""


@attrs.define
class Decision:
    """Whether a stage is up to date, and why (or why not)."""

    stage: str
    run: bool
    reason: str
    code: str = ""
    """The reason's code (one of :data:`REASON_CODES`)."""
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
    reason_code: str = ""
    """The reason's stable code (one of :data:`REASON_CODES`)."""
    started_at: float | None = None
    """Unix time its work started (its lock taken); None: it did not start."""
    ended_at: float | None = None
    slot: int | None = None
    """The job slot (0 .. jobs-1) whose thread ran it; None: the scheduler
    decided it on the spot (up to date, or not run)."""

    def record(self) -> dict[str, Any]:
        """The stage's entry in the run record: every field (``info`` not
        copied), times in ISO 8601 UTC, and the host it ran on."""
        started, ended = self.started_at, self.ended_at
        return {  # spelled out: 1,000 stages a run, attrs.asdict costs twice as much
            "name": self.name,
            "status": self.status,
            "duration_s": self.duration_s,
            "reason": self.reason,
            "attempts": self.attempts,
            "key": self.key,
            "fingerprint": self.fingerprint,
            "error": self.error,
            "info": self.info,
            "network": self.network,
            "reason_code": self.reason_code,
            "started_at": None if started is None else iso_utc(started),
            "ended_at": None if ended is None else iso_utc(ended),
            "slot": self.slot,
            "host": HOST,
        }

    def summary(self) -> dict[str, Any]:
        """The stage's entry in ``pipekit run --json``: the **contract** keys
        ``name``, ``status``, ``duration_s``, ``reason``; ``reason_code`` is
        extra; a record stage that
        ran adds ``records`` (its counters) as an extra, and ``network`` is extra."""
        out: dict[str, Any] = {
            "name": self.name,
            "status": self.status,
            "duration_s": round(self.duration_s, 6),
            "reason": self.reason,
            "reason_code": self.reason_code,
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
