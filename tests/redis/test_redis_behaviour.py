"""Behaviours of the redis backend beyond the conformance suite, against a
real ``redis-server``: takeover of a dead local holder's lock, scripts
reloaded after a restart, retries through a restart, unpublished chunks,
checkpoints through a real run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from conftest import Project
from redisfix import RedisServer, need_modules, real_connection


@pytest.fixture(autouse=True)
def _needs_package() -> None:
    need_modules("redis", "pipekit_redis")


def backend(conn):
    from pipekit_redis.checkpoint import RedisCheckpointStore
    from pipekit_redis.idempotency import RedisIdempotencyStore
    from pipekit_redis.lock import RedisLockBackend

    return RedisLockBackend(conn), RedisIdempotencyStore(conn), RedisCheckpointStore(conn)


def test_lock_of_a_killed_local_holder_is_taken_over_at_once(redis_server: RedisServer) -> None:
    code = textwrap.dedent(f"""
        import sys, time
        from pipekit_redis.factories import lock_backend
        lease = lock_backend({{"url": "{redis_server.url}"}}, state_dir=None).lock("stage/p/k", 60)
        assert lease.acquire(timeout=0)
        print(lease.token, flush=True)
        time.sleep(60)
    """)
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        first = int(child.stdout.readline())
        locks, _, _ = backend(real_connection(redis_server))
        lease = locks.lock("stage/p/k", 60)
        assert not lease.acquire(timeout=0)  # its holder is alive
        assert lease.holder() == f"pid {child.pid} on host {os.uname().nodename}"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    t0 = time.monotonic()
    assert lease.acquire(timeout=0)  # dead: no wait for the 60 s TTL
    assert time.monotonic() - t0 < 1
    assert lease.token > first
    lease.release()


def test_scripts_are_loaded_again_after_the_cache_is_flushed(redis_server: RedisServer) -> None:
    from pipekit.stores import IdemRecord

    locks, store, cps = backend(real_connection(redis_server))
    lease = locks.lock("stage/p/s", 30)
    assert lease.acquire(timeout=0)
    lease.release()
    redis_server.client().script_flush()
    assert lease.acquire(timeout=0)  # a single script call
    lease.release()
    redis_server.client().script_flush()
    cps.put("ns", "id", b"x" * 10)  # a script inside a pipeline
    assert cps.get("ns", "id") == b"x" * 10
    redis_server.client().script_flush()
    store.put_many([IdemRecord("k", "SUCCESS", "fp")])
    assert store.get("k") is not None


def test_commands_retry_through_a_restart(own_redis_server: RedisServer) -> None:
    from pipekit.stores import IdemRecord

    conn = real_connection(own_redis_server, {"retries": 6})
    locks, store, _ = backend(conn)
    store.put_many([IdemRecord("before", "SUCCESS", "fp")])
    own_redis_server.kill()
    restart = threading.Timer(0.3, own_redis_server.start)
    restart.start()
    try:
        lease = locks.lock("stage/p/r", 30)
        assert lease.acquire(timeout=0)  # waits out the restart
        assert store.get("before") is not None  # AOF kept it
        lease.release()
    finally:
        restart.join()  # so that the fixture stops the server it started


def test_no_retries_fail_fast_with_a_clear_error(own_redis_server: RedisServer) -> None:
    from pipekit.errors import BackendUnavailable

    conn = real_connection(own_redis_server, {"retries": 0})
    locks, store, _ = backend(conn)
    own_redis_server.kill()
    with pytest.raises(BackendUnavailable) as info:
        store.get("x")
    assert own_redis_server.url in str(info.value) and "unreachable" in str(info.value)


def test_unpublished_chunks_expire_and_published_ones_do_not(redis_server: RedisServer) -> None:
    from pipekit.errors import FencedOut

    conn = real_connection(redis_server, {"chunk_size": 1024})
    locks, _, cps = backend(conn)
    cps.put("ns", "a", os.urandom(3000))
    c = redis_server.client()
    chunks = [k for k in c.keys("pipekit:cpc:*")]
    assert len(chunks) == 3 and all(c.ttl(k) == -1 for k in chunks)
    lease = locks.lock("stage/p/f", 30)
    assert lease.acquire(timeout=0)
    stale = lease.token - 1
    with pytest.raises(FencedOut):
        cps.put("ns", "a", os.urandom(5000), fence=(lease.key, stale))
    assert sorted(c.keys("pipekit:cpc:*")) == sorted(chunks)  # the refused put left nothing
    cps.put("ns", "a", b"small", fence=(lease.key, lease.token))
    assert len(c.keys("pipekit:cpc:*")) == 1  # the old version's chunks are gone
    lease.release()


def test_checkpoint_resumes_through_a_real_run(project: Project, redis_server: RedisServer) -> None:
    project.pipeline(
        [
            {
                "name": "res",
                "uses": "resumable",
                "outputs": ["out.txt"],
                "retry": {"attempts": 2, "backoff": 0.01, "jitter": 0.0},
            }
        ],
        backend={"name": "redis", "options": {"url": redis_server.url}},
    )
    summary = project.run_json()
    assert summary["stages"][0]["status"] == "ok"
    assert project.read("out.txt") == "loaded={'done_part': 1}\n"
    c = redis_server.client()
    assert c.hlen(f"pipekit:cpi:{project.root.name}.res") == 0  # cleared on commit
    assert c.keys("pipekit:cpc:*") == []
