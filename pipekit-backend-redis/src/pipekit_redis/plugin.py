"""The entry point of pipekit-backend-redis: registers ``redis`` for every
backend kind. Importing it is cheap (redis-py loads only when a factory is
called), since every ``pipekit`` command loads all plugins."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pipekit

from .factories import NAME, checkpoint_store, dead_letter_store, idempotency_store, lock_backend

__all__ = ["NAME"]


@pipekit.hookimpl
def register_lock_backends(register: Callable[[str, Any], None]) -> None:
    register(NAME, lock_backend)


@pipekit.hookimpl
def register_idempotency_stores(register: Callable[[str, Any], None]) -> None:
    register(NAME, idempotency_store)


@pipekit.hookimpl
def register_checkpoint_stores(register: Callable[[str, Any], None]) -> None:
    register(NAME, checkpoint_store)


@pipekit.hookimpl(optionalhook=True)
def register_dead_letter_stores(register: Callable[[str, Any], None]) -> None:
    """Dead letters of record stages (optional: a pipekit without
    dead-letter stores does not call it)."""
    register(NAME, dead_letter_store)
