"""Core's own backend, registered as ``file`` for all three kinds and as the
``file`` dead-letter store. Everything lives under the pipeline's state dir;
nothing leaves the machine."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..stores._file_factories import (
    NAME,
    checkpoint_store,
    dead_letter_store,
    idempotency_store,
    lock_backend,
)
from ._hookspecs import hookimpl

__all__ = ["NAME", "checkpoint_store", "dead_letter_store", "idempotency_store", "lock_backend"]


@hookimpl
def register_lock_backends(register: Callable[[str, Any], None]) -> None:
    register(NAME, lock_backend)


@hookimpl
def register_idempotency_stores(register: Callable[[str, Any], None]) -> None:
    register(NAME, idempotency_store)


@hookimpl
def register_checkpoint_stores(register: Callable[[str, Any], None]) -> None:
    register(NAME, checkpoint_store)


@hookimpl
def register_dead_letter_stores(register: Callable[[str, Any], None]) -> None:
    register(NAME, dead_letter_store)
