"""The factories of core's ``file`` backend (kept apart from the plugin
module so that a cached run builds its backends without importing pluggy)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ConfigError

NAME = "file"


def _no_options(kind: str, options: dict[str, Any]) -> None:
    if options:
        raise ConfigError(f"the file {kind} takes no options; remove: {', '.join(sorted(options))}")


def lock_backend(options: dict[str, Any], *, state_dir: Path) -> Any:
    from ._file_lock import FileLockBackend

    _no_options("lock backend", options)
    return FileLockBackend(state_dir / "locks")


def idempotency_store(options: dict[str, Any], *, state_dir: Path) -> Any:
    from ._file_idempotency import FileIdempotencyStore

    _no_options("idempotency store", options)
    return FileIdempotencyStore(state_dir / "idempotency")


def checkpoint_store(options: dict[str, Any], *, state_dir: Path) -> Any:
    from ._file_checkpoint import FileCheckpointStore

    _no_options("checkpoint store", options)
    return FileCheckpointStore(state_dir / "checkpoints")


def dead_letter_store(options: dict[str, Any], *, state_dir: Path) -> Any:
    from ._file_dead_letters import DB_NAME, FileDeadLetterStore

    _no_options("dead-letter store", options)
    return FileDeadLetterStore(state_dir / DB_NAME)
