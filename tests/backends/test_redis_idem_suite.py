"""The idempotency store conformance suite of the idempotency issue
(``idem_conformance.py``), run against the redis store over fakeredis and a
real ``redis-server``. Skipped while that module is not in this tree."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

pytest.importorskip("idem_conformance", reason="idem_conformance.py is not in this tree yet")

from idem_conformance import *  # noqa: F403
from idem_conformance import MakeStore
from redisfix import fake_connection, real_connection


@pytest.fixture(params=["fakeredis", "redis"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> MakeStore:
    from pipekit_redis.idempotency import RedisIdempotencyStore

    prefix = f"t{uuid.uuid4().hex[:8]}:"  # one empty store private to the test
    if request.param == "fakeredis":
        import fakeredis

        server = fakeredis.FakeServer()
        return lambda: RedisIdempotencyStore(fake_connection({"prefix": prefix}, server))
    srv = request.getfixturevalue("redis_server")
    return lambda: RedisIdempotencyStore(real_connection(srv, {"prefix": prefix}))
