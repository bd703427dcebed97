"""The factories of the ``redis`` backend: ``factory(options, *,
state_dir)``. Each checks the options (a bad one is a config error naming
it) and returns an object over the process's one connection for those
options; none connects until used (the runner calls ``connect()`` once at
start, which says clearly when Redis cannot be reached)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = [
    "NAME",
    "lock_backend",
    "idempotency_store",
    "checkpoint_store",
    "dead_letter_store",
    "connection",
]

NAME = "redis"


def connection(options: dict[str, Any]) -> Any:
    from .connection import connection_for
    from .options import parse_options

    return connection_for(parse_options(options))


def lock_backend(options: dict[str, Any], *, state_dir: Path) -> Any:
    from .lock import RedisLockBackend

    conn = connection(options)
    return RedisLockBackend(conn, conn.options.lock_ttl)


def idempotency_store(options: dict[str, Any], *, state_dir: Path) -> Any:
    from .idempotency import RedisIdempotencyStore

    return RedisIdempotencyStore(connection(options))


def checkpoint_store(options: dict[str, Any], *, state_dir: Path) -> Any:
    from .checkpoint import RedisCheckpointStore

    return RedisCheckpointStore(connection(options))


def dead_letter_store(options: dict[str, Any], *, state_dir: Path) -> Any:
    from .dead_letters import RedisDeadLetterStore

    return RedisDeadLetterStore(connection(options))
