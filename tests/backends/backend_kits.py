"""The backend conformance suite's fixture, imported by its test modules:
``kit``, one per backend, so that each test runs against the ``file``
backend, fakeredis and a real ``redis-server``.

A kit gives two "runners" (``a`` and ``b``): two sets of backend objects
over the same storage, as two processes on two machines would have.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import pytest
from redisfix import RedisServer, fake_connection, real_connection


@attrs.define
class Side:
    locks: Any
    idempotency: Any
    checkpoints: Any


@attrs.define
class Kit:
    name: str
    a: Side
    b: Side
    expiring: bool
    """Leases expire unless renewed (a paused holder can lose its lock)."""
    fencing: bool
    """The stores refuse writes with a stale fencing token."""
    chunk_size: int | None = None

    @property
    def locks(self) -> Any:
        return self.a.locks

    @property
    def idempotency(self) -> Any:
        return self.a.idempotency

    @property
    def checkpoints(self) -> Any:
        return self.a.checkpoints


def _file_side(root: Path) -> Side:
    from pipekit.stores import _file_factories as f

    return Side(
        f.lock_backend({}, state_dir=root),
        f.idempotency_store({}, state_dir=root),
        f.checkpoint_store({}, state_dir=root),
    )


def _redis_side(conn: Any) -> Side:
    from pipekit_redis.checkpoint import RedisCheckpointStore
    from pipekit_redis.idempotency import RedisIdempotencyStore
    from pipekit_redis.lock import RedisLockBackend

    return Side(RedisLockBackend(conn), RedisIdempotencyStore(conn), RedisCheckpointStore(conn))


# Small chunks, so that every checkpoint test also covers blobs of many chunks.
REDIS_OPTIONS = {"chunk_size": 4096, "retries": 1}


@pytest.fixture(name="kit", params=["file", "fakeredis", "redis"])
def kit_fixture(request: pytest.FixtureRequest, tmp_path: Path) -> Kit:
    if request.param == "file":
        root = tmp_path / "state"
        return Kit("file", _file_side(root), _file_side(root), expiring=False, fencing=False)
    if request.param == "fakeredis":
        import fakeredis

        server = fakeredis.FakeServer()
        a = fake_connection(REDIS_OPTIONS, server)
        b = fake_connection(REDIS_OPTIONS, server)
        return Kit("fakeredis", _redis_side(a), _redis_side(b), True, True, 4096)
    srv: RedisServer = request.getfixturevalue("redis_server")
    a = real_connection(srv, REDIS_OPTIONS)
    b = real_connection(srv, REDIS_OPTIONS)
    return Kit("redis", _redis_side(a), _redis_side(b), True, True, 4096)
