"""The runner's own state: per stage, the components of the last committed
fingerprint (so ``status`` can say *why* a stage would run) and the outputs it
produced. The idempotency store, not this file, decides what is done; this is
a record for humans and for reasons, merged under a lock at the end of a run
so that concurrent runners do not lose each other's entries.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import _json
from .atomic import atomic_write_bytes

__all__ = ["RunnerState", "STATE_FILE"]

STATE_FILE = "state.json"
VERSION = 1


class RunnerState:
    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / STATE_FILE
        self.stages: dict[str, dict[str, Any]] = {}
        self._changed: dict[str, dict[str, Any]] = {}
        self.stages = self._read().get("stages", {})

    def _read(self) -> dict[str, Any]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        try:
            data = _json.loads(raw)
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}

    def get(self, stage: str) -> dict[str, Any] | None:
        return self.stages.get(stage)

    def update(self, stage: str, entry: dict[str, Any]) -> None:
        self.stages[stage] = entry
        self._changed[stage] = entry

    def save(self, pipeline: str) -> None:
        """Merge this run's entries into the file under an exclusive lock."""
        if not self._changed:
            return
        from ._portalocker import portalocker as _portalocker

        portalocker = _portalocker()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with portalocker.Lock(
            str(self.path) + ".lock",
            mode="a",
            timeout=60,
            check_interval=0.005,
            flags=portalocker.LOCK_EX | portalocker.LOCK_NB,
        ):
            current = self._read().get("stages", {})
            for name, entry in self._changed.items():
                old = current.get(name)
                if old is None or old.get("finished_at", 0) <= entry.get("finished_at", 0):
                    current[name] = entry
            data = {"version": VERSION, "pipeline": pipeline, "stages": current}
            atomic_write_bytes(self.path, _json.dumps(data, indent=True))
            self.stages = current
            self._changed = {}
