"""Real ``redis-server`` processes for the tests, on free ports, plus
fakeredis; imported by ``tests/conftest.py``.

Where ``redis-server`` (or redis-py, fakeredis, pipekit-backend-redis) is
missing, the tests that need it are skipped with the reason;
``PIPEKIT_REQUIRE_REDIS=1`` (set by CI) turns that skip into a failure. The
Redis on 127.0.0.1:6379 is never used.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REQUIRE_ENV = "PIPEKIT_REQUIRE_REDIS"


def require_redis() -> bool:
    return os.environ.get(REQUIRE_ENV, "") not in ("", "0", "false", "no")


def missing(reason: str) -> None:
    """Skip (or fail, under PIPEKIT_REQUIRE_REDIS=1) with ``reason``."""
    if require_redis():
        pytest.fail(f"{reason} ({REQUIRE_ENV}=1 makes this a failure)", pytrace=False)
    pytest.skip(reason)


def need_modules(*names: str) -> None:
    import importlib.util

    for name in names:
        if importlib.util.find_spec(name) is None:
            missing(f"Python package {name!r} is not installed")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class RedisServer:
    """One ``redis-server`` on 127.0.0.1 and a free port, in its own folder.
    ``persistent``: AOF with fsync on every write (survives kill -9)."""

    def __init__(self, folder: Path, *, persistent: bool = False, port: int | None = None) -> None:
        self.folder = folder
        self.persistent = persistent
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        folder.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def argv(self) -> list[str]:
        binary = shutil.which("redis-server")
        assert binary is not None
        args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder)]
        args += ["--save", "", "--daemonize", "no", "--protected-mode", "yes"]
        if self.persistent:
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            args += ["--appendonly", "no"]
        return args

    def start(self, timeout: float = 10.0) -> None:
        log = open(self.folder / "redis.log", "ab")
        self.proc = subprocess.Popen(
            self.argv(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = (self.folder / "redis.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"redis-server exited ({self.proc.returncode}): {tail}")
            if self.ping():
                return
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server on port {self.port} did not answer in {timeout}s")

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.kill()
        self.proc = None

    def restart(self) -> None:
        self.kill()
        self.start()

    def client(self) -> Any:
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def flush(self) -> None:
        c = self.client()
        try:
            c.flushall()
            c.script_flush()
        finally:
            c.close()


def start_server(folder: Path, **kw: Any) -> RedisServer:
    if shutil.which("redis-server") is None:
        missing("redis-server is not on PATH (install Redis to run these tests)")
    server = RedisServer(folder, **kw)
    server.start()
    return server


@pytest.fixture(scope="session")
def redis_server_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    need_modules("redis", "pipekit_redis")
    server = start_server(tmp_path_factory.mktemp("redis-server"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_server(redis_server_session: RedisServer) -> RedisServer:
    """The session's server, emptied for this test."""
    if not redis_server_session.ping():  # a test killed it: start it again
        redis_server_session.start()
    redis_server_session.flush()
    return redis_server_session


@pytest.fixture
def own_redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A server for this test alone (to kill and restart), with AOF
    persistence as pipekit's docs advise."""
    need_modules("redis", "pipekit_redis")
    server = start_server(tmp_path / "redis-own", persistent=True)
    try:
        yield server
    finally:
        server.stop()


def fake_connection(options: dict[str, Any] | None = None, server: Any = None) -> Any:
    """A pipekit_redis connection over fakeredis (a server of its own unless given)."""
    need_modules("redis", "fakeredis", "lupa", "pipekit_redis")
    import fakeredis
    from pipekit_redis.connection import RedisConnection
    from pipekit_redis.options import parse_options

    server = server or fakeredis.FakeServer()
    opts = parse_options(dict(options or {}), environ={})
    return RedisConnection(opts, client=fakeredis.FakeRedis(server=server))


def real_connection(server: RedisServer, options: dict[str, Any] | None = None) -> Any:
    from pipekit_redis.connection import RedisConnection
    from pipekit_redis.options import parse_options

    opts = parse_options({"url": server.url, **(options or {})}, environ={})
    return RedisConnection(opts)
