"""Damaged records in Redis (issue 20 item 12): an idempotency record or a
dead letter that parses but has the wrong shape reads as absent, with one
warning naming the key, on a real ``redis-server``."""

from __future__ import annotations

import json
import logging
import time
import uuid

import pytest
from pipekit import IdempotencyManager
from pipekit.state._shapes import stage_record
from pipekit.stores import DeadLetter
from redisfix import RedisServer, real_connection


def _prefix() -> dict[str, str]:
    return {"prefix": f"t{uuid.uuid4().hex[:8]}:"}


@pytest.mark.parametrize(
    "change",
    [
        {"expires": "soon"},
        {"created": [1]},
        {"status": 7},
        {"result": 5, "key": "stage/p/s:fp"},
        {"result": {"outputs": {"o": 5}}, "key": "stage/p/s:fp"},
    ],
    ids=["expires text", "created list", "status number", "stage result", "stage outputs"],
)
def test_a_damaged_idempotency_record_reads_as_absent(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture, change: dict[str, object]
) -> None:
    from pipekit_redis.idempotency import RedisIdempotencyStore

    conn = real_connection(redis_server, _prefix())
    store = RedisIdempotencyStore(conn)
    manager = IdempotencyManager(store)
    key = str(change.get("key", "k"))
    manager.complete(manager.begin(key, "fp"), {"outputs": {"o": "abc"}})
    rkey = store._rkey(key)
    client = redis_server.client()
    doc = json.loads(client.hget(rkey, "record"))
    client.hset(rkey, "record", json.dumps({**doc, **change}))

    caplog.set_level(logging.WARNING)
    if key.startswith("stage/"):  # a runner's stage record: checked where the runner reads it
        assert stage_record(store, key) is None
    else:
        assert store.get(key) is None
        assert manager.begin(key, "fp").claimed  # absent: the caller runs again
    naming = [r for r in caplog.records if repr(key) in r.getMessage()]
    assert len(naming) == 1 and "damaged" in naming[0].getMessage()


def test_a_damaged_dead_letter_is_left_out(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    from pipekit_redis.dead_letters import RedisDeadLetterStore

    store = RedisDeadLetterStore(real_connection(redis_server, _prefix()))
    now = time.time()
    fields = dict(
        pipeline="p",
        stage="s",
        fingerprint="fp",
        run_id="r",
        input="in.txt",
        input_index=0,
        offset=0,
        line=1,
        format="lines",
        record=b"x",
        error_type="E",
        message="m",
        traceback="t",
        attempts=1,
        first_failed=now,
        last_failed=now,
    )
    good = store.add(DeadLetter(**fields))  # type: ignore[arg-type]
    bad = store.add(DeadLetter(**{**fields, "offset": 2}))  # type: ignore[arg-type]
    redis_server.client().hset(f"{store._base('p')}l:{bad}", "attempts", "many")

    caplog.set_level(logging.WARNING)
    assert [letter.id for letter in store.list("p")] == [good]
    assert store.get("p", bad) is None
    naming = [r for r in caplog.records if f"l:{bad}" in r.getMessage()]
    assert len(naming) == 1 and "damaged" in naming[0].getMessage()
