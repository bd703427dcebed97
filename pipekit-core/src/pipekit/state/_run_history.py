"""Reading run records back (``pipekit runs``, ``pipekit report``).

A run's record is its whole record (``<run_id>.json``) when the run ended,
else its journal (``<run_id>.jsonl``, see :mod:`._run_records`): a run
still going (``running``), or one killed mid-way (``killed``), with the
stages that ended. Either is read into one shape: the whole record's.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import attrs

from .. import _json
from .._atomic import TEMP_MARK, pid_runs
from ..errors import ConfigError
from ._run_records import JOURNAL_SUFFIX, RECORD_SUFFIX, iso_utc

__all__ = ["RunFile", "list_runs", "find_run", "load_run", "stage_counts"]

HOST = os.uname().nodename


@attrs.frozen
class RunFile:
    run_id: str
    path: Path
    started: float
    """Its mtime: the run's start time (a journal's: its last write)."""


def list_runs(state_dir: Path) -> list[RunFile]:
    """Every recorded run, newest first (a run with both a record and a
    journal, killed as it ended: its record)."""
    folder = state_dir / "runs"
    found: dict[str, RunFile] = {}
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return []
    for entry in entries:
        name = entry.name
        if TEMP_MARK in name or not name.endswith((RECORD_SUFFIX, JOURNAL_SUFFIX)):
            continue
        run_id, suffix = name.rsplit(".", 1)
        if suffix == "jsonl" and run_id in found:
            continue
        try:
            started = entry.stat().st_mtime
        except FileNotFoundError:
            continue
        found[run_id] = RunFile(run_id, Path(entry.path), started)
    return sorted(found.values(), key=lambda run: (run.started, run.run_id), reverse=True)


def find_run(state_dir: Path, name: str) -> RunFile:
    """The run ``name`` names (``latest``: the newest); a clear error
    naming the newest ones when there is none."""
    runs = list_runs(state_dir)
    if not runs:
        raise ConfigError(f"no run is recorded in {state_dir / 'runs'}")
    if name == "latest":
        return runs[0]
    for run in runs:
        if run.run_id == name:
            return run
    newest = ", ".join(run.run_id for run in runs[:5])
    raise ConfigError(f"no run {name!r} is recorded; the newest: {newest} (or 'latest')")


def load_run(run: RunFile) -> dict[str, Any]:
    """The run's record, in the whole record's shape (a journal's status:
    ``running`` or ``killed``). A damaged record is a clear error."""
    try:
        data = run.path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"run {run.run_id!r}: its record is gone ({run.path})") from None
    try:
        if run.path.name.endswith(JOURNAL_SUFFIX):
            record = _from_journal(data)
        else:
            record = _json.loads(data)
    except (_json.JSONDecodeError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"run {run.run_id!r}: its record {run.path} is damaged: {exc}") from None
    return _normalised(record)


def _from_journal(data: bytes) -> dict[str, Any]:
    lines = data.split(b"\n")
    header = _json.loads(lines[0])
    if header.get("event") != "start":
        raise ValueError("its first line is not the run's start")
    stages = []
    for line in lines[1:]:
        try:
            entry = _json.loads(line)
        except _json.JSONDecodeError:
            continue  # the last line, cut short by the kill, or the empty end
        if isinstance(entry, dict) and entry.pop("event", None) == "stage":
            stages.append(entry)
    header.pop("event")
    alive = header.get("host") == HOST and pid_runs(int(header.get("pid") or 0))
    ended = [s["ended_at"] for s in stages if s.get("ended_at")]
    record = {
        **header,
        "status": "running" if alive else "killed",
        "ended_at": None,
        "last_stage_ended_at": max(ended) if ended else None,
        "exit_code": None,
        "stages": stages,
    }
    record["metrics"] = {
        f"stages_{status}": count for status, count in stage_counts(record).items()
    }
    return record


def _normalised(record: dict[str, Any]) -> dict[str, Any]:
    """Records of earlier versions: Unix times become ISO 8601 UTC, a
    missing graph the stages in order (without their links)."""
    for key in ("started_at", "ended_at"):
        if isinstance(record.get(key), (int, float)):
            record[key] = iso_utc(record[key])
    if "graph" not in record:
        record["graph"] = [{"name": s["name"], "deps": []} for s in record.get("stages", [])]
    record.setdefault("schema_version", 1)
    return record


def stage_counts(record: dict[str, Any]) -> dict[str, int]:
    """How many stages ended ``ok``, ``skipped`` and ``failed``."""
    counts = {"ok": 0, "skipped": 0, "failed": 0}
    for stage in record.get("stages", []):
        counts[stage.get("status", "?")] = counts.get(stage.get("status", "?"), 0) + 1
    return counts
