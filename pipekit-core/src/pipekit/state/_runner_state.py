"""The runner's own state: per stage, the components of the last committed
fingerprint (so ``status`` can say *why* a stage would run) and the outputs it
produced. The idempotency store, not this file, decides what is done; this is
a record for humans and for reasons, merged at the end of a run by a
:class:`~pipekit.PipelineState` transaction, so that concurrent runners do not
lose each other's entries, and every change is backed up and logged.

Loading it is one plain read without the lock: a ``PipelineState`` file is
only ever replaced by a rename, so a lone read sees a whole file.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from .. import _json
from ..errors import StateError, StateReadError, StateValidationError
from ._shapes import DamagedRecord, check_stage_entry, move_aside, warn_damaged

__all__ = ["RunnerState", "STATE_FILE", "RUNNER_BACKUPS", "runner_state_file", "state_file_name"]

log = logging.getLogger("pipekit.state")

STATE_FILE = "state.json"
DEFAULT_PIPELINE_FILES = ("pipekit.toml", "pipeline.toml", "pipeline.json")


def state_file_name(pipeline_file: Path) -> str:
    """The runner state file of a pipeline file: ``state.json`` for the
    folder's default pipeline file, ``state.<stem>.json`` for another one
    (``-f etl.toml``), so that pipeline files sharing a state folder do not
    share their stages' entries."""
    if pipeline_file.name in DEFAULT_PIPELINE_FILES:
        return STATE_FILE
    return f"state.{pipeline_file.stem}.json"


VERSION = 1
RUNNER_BACKUPS = 10  # previous versions of state.json kept in state.json.backups/
LOCK_TIMEOUT = 60.0


def runner_state_file(state_dir: Path, name: str = STATE_FILE) -> Any:
    """The runner's state file (``state.json``) as a :class:`~pipekit.PipelineState`."""
    from ._pipeline_state import PipelineState

    return PipelineState(
        state_dir / name,
        schema=check_runner_state,
        max_backups=RUNNER_BACKUPS,
        lock_timeout=LOCK_TIMEOUT,
    )


def check_runner_state(data: Any) -> None:
    """The shape of ``state.json`` (a cheap check: it is written by code)."""
    if not isinstance(data, dict):
        raise StateValidationError("state.json must hold an object", problems=[("$", "object")])
    stages = data.get("stages", {})
    if not isinstance(data.get("version", VERSION), int) or not isinstance(stages, dict):
        raise StateValidationError(
            "state.json needs an integer 'version' and an object 'stages'",
            problems=[("$.stages", "expected an object")],
        )
    for name, entry in stages.items():
        if not isinstance(entry, dict):
            raise StateValidationError(
                f"state.json: the entry of stage {name!r} must be an object",
                problems=[(f"$.stages.{name}", "expected an object")],
            )


_ENTRIES_IGNORED = (
    "such entries are ignored (their stages are checked against the idempotency store) "
    "and replaced at the end of the run"
)


class RunnerState:
    def __init__(self, state_dir: Path, name: str = STATE_FILE) -> None:
        self.state_dir = state_dir
        self.path = state_dir / name
        self._changed: dict[str, dict[str, Any]] = {}
        self._damaged = False
        self.stages: dict[str, dict[str, Any]] = self._load()

    def _load(self) -> dict[str, dict[str, Any]]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        except IsADirectoryError:
            warn_damaged(self.path, "a folder, not a file", _ENTRIES_IGNORED)
            return {}
        except OSError as exc:
            log.warning("cannot read %s (%s): stage reasons start afresh", self.path, exc)
            return {}
        try:
            data = _json.loads(raw)
        except ValueError as exc:
            self._damaged = True
            log.warning(
                "%s Until then runs go on (the idempotency store says what is done), "
                "but without the stage entries that explain why a stage runs",
                runner_state_file(self.state_dir, self.path.name)._damaged(exc, raw),
            )
            return {}
        return self._valid_stages(data)

    def _valid_stages(self, data: Any) -> dict[str, dict[str, Any]]:
        """The stage entries of ``data`` that have their shape; the others
        (a hand edit, another version's file) read as absent, with a warning."""
        if data is None:  # no file yet
            return {}
        if not isinstance(data, dict):
            warn_damaged(self.path, "not a JSON object", _ENTRIES_IGNORED)
            return {}
        stages = data.get("stages", {})
        if not isinstance(stages, dict):
            warn_damaged(self.path, "'stages' is not an object", _ENTRIES_IGNORED)
            return {}
        good = {}
        for name, entry in stages.items():
            try:
                check_stage_entry(entry)
            except DamagedRecord as exc:
                warn_damaged(self.path, f"the entry of stage {name!r}: {exc}", _ENTRIES_IGNORED)
                continue
            good[name] = entry
        return good

    def get(self, stage: str) -> dict[str, Any] | None:
        return self.stages.get(stage)

    def update(self, stage: str, entry: dict[str, Any]) -> None:
        self.stages[stage] = entry
        self._changed[stage] = entry

    def save(self, pipeline: str) -> None:
        """Merge this run's entries into the file in one transaction (newest
        entry per stage wins). A state file that cannot be read or written is
        reported, not raised: the run's work is committed either way."""
        if not self._changed:
            return
        state = runner_state_file(self.state_dir, self.path.name)
        try:
            if self.path.is_dir():  # damaged (said at load): kept for a look, then replaced
                move_aside(self.path)
            with state.transaction() as tx:
                current = self._valid_stages(tx.data)
                for name, entry in self._changed.items():
                    old = current.get(name)
                    if old is None or (old.get("finished_at") or 0) <= (
                        entry.get("finished_at") or 0
                    ):
                        current[name] = entry
                tx.data = {"version": VERSION, "pipeline": pipeline, "stages": current}
        except (StateError, OSError) as exc:
            if self._damaged and isinstance(exc, StateReadError):  # explained at the start
                log.error("%s does not parse: this run's stage entries were not saved", self.path)
            else:
                log.error("could not save this run's stage entries: %s", exc)
            return
        self.stages = current
        self._changed = {}
