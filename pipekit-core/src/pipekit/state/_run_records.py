"""Per-run records: ``<state_dir>/runs/<run_id>.json``, newest kept."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from .. import _json
from .._atomic import TEMP_MARK, atomic_write_bytes
from .._private_files import FILE_MODE, make_private_dir

__all__ = ["write_run_record", "KEEP_RUNS"]

KEEP_RUNS = 200


def write_run_record(state_dir: Path, record: dict[str, Any], keep: int = KEEP_RUNS) -> Path:
    """Write a run's record (not fsynced: it reports, it does not decide) and
    keep only the ``keep`` newest."""
    folder = state_dir / "runs"
    path = folder / f"{record['run_id']}.json"
    make_private_dir(folder)
    atomic_write_bytes(path, _json.dumps(record, indent=True), durable=False, mode=FILE_MODE)
    names = [n for n in os.listdir(folder) if n.endswith(".json") and TEMP_MARK not in n]
    for old in sorted(names)[: max(0, len(names) - keep)]:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(folder / old)
    return path
