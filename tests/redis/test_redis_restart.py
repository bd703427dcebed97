"""Issue 20 item 7: a Redis primary that restarts is waited out with the
default options (a restart of 10 s and more), and a lease whose key did not
survive the restart is found lost, so that its holder commits nothing."""

from __future__ import annotations

import threading
import time

import pytest
from redisfix import RedisServer, need_modules, real_connection


@pytest.fixture(autouse=True)
def _needs_package() -> None:
    need_modules("redis", "pipekit_redis")


def test_a_ten_second_restart_is_waited_out_by_default(own_redis_server: RedisServer) -> None:
    from pipekit.stores import IdemRecord
    from pipekit_redis.idempotency import RedisIdempotencyStore
    from pipekit_redis.lock import RedisLockBackend

    conn = real_connection(own_redis_server)  # the default options
    locks, store = RedisLockBackend(conn), RedisIdempotencyStore(conn)
    held = locks.lock("stage/p/held", 60)
    assert held.acquire(timeout=0)
    own_redis_server.kill()
    restart = threading.Timer(10.0, own_redis_server.start)
    restart.start()
    try:
        started = time.monotonic()
        store.put_many([IdemRecord("during", "SUCCESS", "fp")])  # waits out the restart
        assert time.monotonic() - started >= 9.0
        assert store.get("during") is not None
        held.renew()  # the lock key survived (AOF): still this lease's
        assert not held.lost
        held.release()
    finally:
        restart.join()


def test_a_lease_whose_key_vanished_in_a_restart_is_lost(tmp_path) -> None:
    """A server without persistence loses the lock key: the holder's next
    renewal finds it gone, so the runner commits nothing of the attempt."""
    from pipekit.errors import LeaseLost
    from pipekit_redis.lock import RedisLockBackend
    from redisfix import start_server

    server = start_server(tmp_path / "redis-volatile", persistent=False)
    try:
        conn = real_connection(server)
        lease = RedisLockBackend(conn).lock("stage/p/volatile", 60)
        assert lease.acquire(timeout=0)
        token = lease.token
        server.restart()  # SIGKILL, then the same port again, empty
        with pytest.raises(LeaseLost):
            lease.renew()
        assert lease.lost
        other = RedisLockBackend(real_connection(server)).lock("stage/p/volatile", 60)
        assert other.acquire(timeout=0)
        assert token is not None and other.token is not None and other.token > token
        other.release()
    finally:
        server.stop()
