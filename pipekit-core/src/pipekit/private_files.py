"""Modes of what pipekit keeps about a pipeline: state, idempotency records,
dead letters. Records can hold data, so they are the runner's user's alone,
whatever the umask: files 0600, folders 0700 (a umask can only take bits
away from a mode given at creation, never add them)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["FILE_MODE", "DIR_MODE", "make_private_dir"]

FILE_MODE = 0o600
DIR_MODE = 0o700


def make_private_dir(path: Path | str) -> None:
    """Make ``path`` and its missing parents as folders of mode 0700
    (folders that exist are left as they are)."""
    path = Path(path)
    if path.is_dir():
        return
    missing = []
    while not path.is_dir():
        missing.append(path)
        if path.parent == path:
            break
        path = path.parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder, DIR_MODE)
        except FileExistsError:
            if not folder.is_dir():
                raise
