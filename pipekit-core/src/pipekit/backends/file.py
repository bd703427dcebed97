"""Core's own backend, registered as ``file`` for all three kinds. Everything
lives under the pipeline's state dir; nothing leaves the machine."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..hookspecs import hookimpl

NAME = "file"


def _no_options(kind: str, options: dict[str, Any]) -> None:
    if options:
        from ..errors import ConfigError

        raise ConfigError(f"the file {kind} takes no options; remove: {', '.join(sorted(options))}")


def lock_backend(options: dict[str, Any], *, state_dir: Path) -> Any:
    from .file_lock import FileLockBackend

    _no_options("lock backend", options)
    return FileLockBackend(state_dir / "locks")


def idempotency_store(options: dict[str, Any], *, state_dir: Path) -> Any:
    from .file_idempotency import FileIdempotencyStore

    _no_options("idempotency store", options)
    return FileIdempotencyStore(state_dir / "idempotency")


def checkpoint_store(options: dict[str, Any], *, state_dir: Path) -> Any:
    from .file_checkpoint import FileCheckpointStore

    _no_options("checkpoint store", options)
    return FileCheckpointStore(state_dir / "checkpoints")


@hookimpl
def register_lock_backends(register: Callable[[str, Any], None]) -> None:
    register(NAME, lock_backend)


@hookimpl
def register_idempotency_stores(register: Callable[[str, Any], None]) -> None:
    register(NAME, idempotency_store)


@hookimpl
def register_checkpoint_stores(register: Callable[[str, Any], None]) -> None:
    register(NAME, checkpoint_store)
