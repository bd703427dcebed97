"""The checkpoint byte-store conformance class of the checkpoint issue
(``checkpoint_conformance.py``), run against the redis store over fakeredis
and a real ``redis-server``, with small chunks so that blobs span many.
Skipped while that module is not in this tree."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

cc = pytest.importorskip(
    "checkpoint_conformance", reason="checkpoint_conformance.py is not in this tree yet"
)

from redisfix import fake_connection, real_connection  # noqa: E402


class TestRedisCheckpointStore(cc.CheckpointStoreConformance):
    @pytest.fixture(params=["fakeredis", "redis"])
    def checkpoint_store_factory(
        self, request: pytest.FixtureRequest, tmp_path: Path
    ) -> Callable[[], Any]:
        from pipekit_redis.checkpoint import RedisCheckpointStore

        options = {"prefix": f"t{uuid.uuid4().hex[:8]}:", "chunk_size": 4096}
        if request.param == "fakeredis":
            import fakeredis

            server = fakeredis.FakeServer()
            return lambda: RedisCheckpointStore(fake_connection(options, server))
        srv = request.getfixturevalue("redis_server")
        return lambda: RedisCheckpointStore(real_connection(srv, options))

    @pytest.fixture
    def checkpoint_store(self, checkpoint_store_factory: Callable[[], Any]) -> Any:
        return checkpoint_store_factory()
