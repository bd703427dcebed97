"""The hook specifications of pipekit (**contract**).

Plugins implement these with ``@pipekit.hookimpl``. Registration hooks are
called once at start-up, each with a ``register`` callable; observer hooks are
called while a run goes on, and an exception raised in one is logged and never
changes the run's outcome or state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

__all__ = [
    "hookspec",
    "hookimpl",
    "register_stages",
    "register_lock_backends",
    "register_idempotency_stores",
    "register_checkpoint_stores",
    "register_dead_letter_stores",
    "on_run_start",
    "on_stage_start",
    "on_stage_end",
    "on_record_failed",
    "on_run_end",
]

PROJECT = "pipekit"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# -- registration hooks -------------------------------------------------------


@hookspec
def register_stages(register: Callable[[Any], None]) -> None:
    """Register stage processors: call ``register(processor)`` for each.

    ``processor`` is an instance of a ``pipekit.Stage`` or
    ``pipekit.RecordStage`` subclass with a unique ``name``.
    """


@hookspec
def register_lock_backends(register: Callable[[str, Callable[..., Any]], None]) -> None:
    """Register lock backends: ``register(name, factory)``.

    ``factory(options: dict, *, state_dir: pathlib.Path)`` returns an object
    with ``lock(key, ttl) -> lease`` (see ``pipekit.stores._protocols``).
    """


@hookspec
def register_idempotency_stores(register: Callable[[str, Callable[..., Any]], None]) -> None:
    """Register idempotency stores: ``register(name, factory)``.

    ``factory(options: dict, *, state_dir: pathlib.Path)`` returns an
    ``IdempotencyStore``.
    """


@hookspec
def register_checkpoint_stores(register: Callable[[str, Callable[..., Any]], None]) -> None:
    """Register checkpoint stores: ``register(name, factory)``.

    ``factory(options: dict, *, state_dir: pathlib.Path)`` returns a
    ``CheckpointStore`` (a byte store: put, get, list, delete).
    """


@hookspec
def register_dead_letter_stores(register: Callable[[str, Callable[..., Any]], None]) -> None:
    """Register dead-letter stores: ``register(name, factory)``.

    ``factory(options: dict, *, state_dir: pathlib.Path)`` returns a
    ``DeadLetterStore`` (see ``pipekit.stores._protocols``). A backend uses
    the dead-letter store registered under its own name; a backend that
    registers none keeps its dead letters in the ``file`` store (SQLite in
    the state dir).
    """


# -- observer hooks -----------------------------------------------------------


@hookspec
def on_run_start(run: Any) -> None:
    """A run starts. ``run`` is a ``pipekit.RunInfo`` (run_id, pipeline, stages)."""


@hookspec
def on_stage_start(run: Any, stage: Any) -> None:
    """A stage is about to execute (not called for skipped stages).

    ``stage`` is the stage's ``pipekit.StageConfig``.
    """


@hookspec
def on_stage_end(run: Any, stage: Any, result: Any) -> None:
    """A stage finished: ``result`` is a ``pipekit.StageResult`` (status ok,
    skipped or failed, duration, reason, attempts, error)."""


@hookspec
def on_record_failed(run: Any, stage: Any, record: Any, error: BaseException) -> None:
    """A record stage's ``process`` raised for ``record``: called for every
    failed try, before the record is retried or dead-lettered."""


@hookspec
def on_run_end(run: Any, summary: Any) -> None:
    """A run ended; ``summary`` is the dict that ``pipekit run --json`` prints."""
