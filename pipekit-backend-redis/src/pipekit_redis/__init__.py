"""pipekit-backend-redis: locks, idempotency records, checkpoints and dead
letters in Redis, so that runners on many machines can share one pipeline.

Registered through the ``pipekit`` entry point as the backend ``redis``; see
docs/backends.md. The classes are importable for use outside a run:

    from pipekit_redis import RedisOptions, connect
    conn = connect({"url": "redis://127.0.0.1:6379/0"})
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "RedisOptions",
    "RedisConnection",
    "RedisLockBackend",
    "RedisLease",
    "RedisIdempotencyStore",
    "RedisCheckpointStore",
    "parse_options",
    "redact_url",
    "connect",
]

_LAZY = {
    "RedisOptions": "pipekit_redis.options",
    "parse_options": "pipekit_redis.options",
    "redact_url": "pipekit_redis.options",
    "RedisConnection": "pipekit_redis.connection",
    "RedisLockBackend": "pipekit_redis.lock",
    "RedisLease": "pipekit_redis.lock",
    "RedisIdempotencyStore": "pipekit_redis.idempotency",
    "RedisCheckpointStore": "pipekit_redis.checkpoint",
}


def connect(options: dict[str, Any]) -> Any:
    """The process's connection for these backend options (not yet connected)."""
    from .factories import connection

    return connection(options)


def __getattr__(name: str) -> Any:
    modname = _LAZY.get(name)
    if modname is None:
        raise AttributeError(f"module 'pipekit_redis' has no attribute {name!r}")
    value = getattr(import_module(modname), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:  # pragma: no cover
    from .checkpoint import RedisCheckpointStore
    from .connection import RedisConnection
    from .idempotency import RedisIdempotencyStore
    from .lock import RedisLease, RedisLockBackend
    from .options import RedisOptions, parse_options, redact_url
