"""One Redis connection (pool) per set of options, shared by the lock
backend, the stores and the dead-letter queue of a process.

- Timeouts on connect and on every reply (``connect_timeout``,
  ``socket_timeout``).
- Connection errors and timeouts (a server restarting, or still loading
  its data) are retried with exponential backoff and jitter for
  ``retry_budget`` seconds (and at most ``retries`` times, when set), here
  rather than by redis-py (whose retries differ between versions). That is
  safe because every command pipekit sends is idempotent: reads, plain
  writes of the same bytes, and Lua scripts written so that a second run
  after a lost reply changes nothing (see ``scripts.py``). The check at
  start (``connect``) retries for ``connect_timeout`` at most, so that a
  wrong URL is said at once.
- Errors that remain become :class:`pipekit.errors.BackendUnavailable`
  naming the server by its URL without the password.
- Scripts run with ``EVALSHA``; after a server restart (script cache empty)
  they are loaded again and the call repeated.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from pipekit.errors import BackendUnavailable, PipekitError

from .options import RedisOptions
from .scripts import SCRIPTS

__all__ = ["RedisConnection", "connection_for", "RedisCommandError"]

T = TypeVar("T")

_BACKOFF_BASE = 0.05
_BACKOFF_CAP = 2.0


class RedisCommandError(PipekitError):
    """Redis refused a command (e.g. out of memory, ACL, read-only replica)."""


def _redis() -> Any:
    import redis

    return redis


class RedisConnection:
    """A lazily created client plus the scripts; thread-safe."""

    def __init__(self, options: RedisOptions, client: Any = None) -> None:
        self.options = options
        self.prefix = options.prefix
        self._client = client
        self._lock = threading.Lock()
        self._shas: dict[str, str] = {}
        self._checked = False
        self.waitaof: bool | None = None  # None: not tried yet

    # -- keys -------------------------------------------------------------------

    def key(self, kind: str, name: str) -> str:
        return f"{self.prefix}{kind}:{name}"

    # -- the client ---------------------------------------------------------------

    @property
    def client(self) -> Any:
        client = self._client
        if client is None:
            with self._lock:
                if self._client is None:
                    self._client = self._make_client()
                client = self._client
        return client

    def _make_client(self) -> Any:
        redis = _redis()
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        o = self.options
        # Retries are ours (see _retrying): redis-py's differ between versions
        # (5.0 does not retry a refused connection) and would multiply ours.
        return redis.Redis.from_url(
            o.url,
            socket_timeout=o.socket_timeout,
            socket_connect_timeout=o.connect_timeout,
            socket_keepalive=True,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=30,
            client_name="pipekit",
        )

    def _retrying(self, fn: Callable[[], T], budget: float | None = None) -> T:
        """``fn()``, repeated after a connection error or timeout with
        exponential backoff and jitter (0.05 s doubling up to 2 s) until
        ``budget`` seconds (default: the ``retry_budget`` option) have
        passed since the first failure, or ``retries`` retries were made.
        Every command pipekit sends is safe to repeat."""
        redis = _redis()
        retryable = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
        limit = self.options.retries
        delay = _BACKOFF_BASE
        attempt = 0
        deadline: float | None = None
        while True:
            try:
                return fn()
            except redis.exceptions.AuthenticationError:
                raise
            except retryable:
                now = time.monotonic()
                if deadline is None:
                    deadline = now + (self.options.retry_budget if budget is None else budget)
                if now >= deadline or (limit is not None and attempt >= limit):
                    raise
                attempt += 1
                pause = delay / 2 + random.uniform(0, delay / 2)
                time.sleep(min(pause, deadline - now))
                delay = min(delay * 2, _BACKOFF_CAP)

    # -- errors -----------------------------------------------------------------

    def where(self) -> str:
        return f"Redis at {self.options.safe_url}"

    @contextmanager
    def errors(self, doing: str, budget: float | None = None) -> Iterator[None]:
        """Turn redis-py's exceptions into pipekit's, said with the URL
        (never the password), what was being done and for how long it was
        retried (``budget``; default: ``retry_budget``)."""
        redis = _redis()
        try:
            yield
        except redis.exceptions.AuthenticationError as exc:
            raise BackendUnavailable(self._auth_message(str(exc))) from None
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            detail = _short(exc)
            hint = (
                "for TLS, name the CA that signed the server's certificate in the URL "
                "(rediss://...?ssl_ca_certs=/path/ca.pem)"
                if "SSL" in detail or "CERTIFICATE" in detail
                else "check that the server is up and the URL is right (backend option 'url' "
                "or PIPEKIT_REDIS_URL)"
            )
            raise BackendUnavailable(
                f"{self.where()} is unreachable while {doing}: {detail} "
                f"(tried for {self._tried_for(budget)}); {hint}"
            ) from None
        except redis.exceptions.ResponseError as exc:
            raise RedisCommandError(
                f"{self.where()} refused a command while {doing}: {exc}"
            ) from exc

    def _tried_for(self, budget: float | None) -> str:
        o = self.options
        said = f"up to {o.retry_budget if budget is None else budget:g}s"
        return said if o.retries is None else f"{said}, at most {o.retries} retries"

    def _has_password(self) -> bool:
        from urllib.parse import parse_qsl, urlsplit

        parts = urlsplit(self.options.url)
        if parts.password or (parts.username and parts.scheme != "unix"):
            return True
        return any(k.lower() == "password" for k, _ in parse_qsl(parts.query))

    def _auth_message(self, detail: str) -> str:
        if not self._has_password():
            return (
                f"{self.where()} needs a password: put it in the URL, "
                "redis://[USER]:PASSWORD@host:port/db (best in PIPEKIT_REDIS_URL, not in a "
                "pipeline file)"
            )
        return (
            f"{self.where()} refused the credentials ({_short(Exception(detail))}); check the "
            "password (and user) in the URL"
        )

    def connect(self) -> None:
        """Check once per process that the server answers (``PING``)."""
        if self._checked:
            return
        with self.errors("connecting", self.options.connect_timeout):
            try:
                self._retrying(self.client.ping, self.options.connect_timeout)
            except _redis().exceptions.ResponseError as exc:
                msg = str(exc)
                if "NOAUTH" in msg or "WRONGPASS" in msg or "authenticated" in msg:
                    raise BackendUnavailable(self._auth_message(msg)) from None
                raise
        self._checked = True

    # -- scripts -----------------------------------------------------------------

    def _load(self, client: Any) -> None:
        shas = {name: client.script_load(body) for name, body in SCRIPTS.items()}
        self._shas = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in shas.items()}

    def sha(self, name: str) -> str:
        sha = self._shas.get(name)
        if sha is None:
            import hashlib

            sha = hashlib.sha1(SCRIPTS[name].encode()).hexdigest()
        return sha

    def script(
        self,
        name: str,
        keys: Sequence[Any],
        args: Sequence[Any],
        doing: str,
        *,
        budget: float | None = None,
    ) -> Any:
        """Run one script (one round trip; two more after a server restart),
        retried for ``budget`` seconds (default: ``retry_budget``)."""
        redis = _redis()
        client = self.client

        def run() -> Any:
            try:
                return client.evalsha(self.sha(name), len(keys), *keys, *args)
            except redis.exceptions.NoScriptError:
                self._load(client)
                return client.evalsha(self.sha(name), len(keys), *keys, *args)

        with self.errors(doing, budget):
            return self._retrying(run, budget)

    def pipeline(self, build: Callable[[Any], None], doing: str) -> list[Any]:
        """Send the commands ``build(pipe)`` queues in one round trip
        (not a transaction: each command must be safe to repeat)."""
        redis = _redis()

        def run() -> list[Any]:
            for attempt in (1, 2):
                pipe = self.client.pipeline(transaction=False)
                build(pipe)
                try:
                    return list(pipe.execute())
                except redis.exceptions.NoScriptError:
                    if attempt == 2:
                        raise
                    self._load(self.client)
            raise AssertionError("unreachable")  # pragma: no cover

        with self.errors(doing):
            return self._retrying(run)

    def call(self, fn: Callable[[Any], T], doing: str) -> T:
        with self.errors(doing):
            return self._retrying(lambda: fn(self.client))

    def wait_durable(self) -> None:
        """Wait until this connection's writes are fsynced to the AOF where
        the server can say so (``WAITAOF``, Redis 7.2+ with appendonly on);
        elsewhere Redis's own persistence settings decide."""
        if self.waitaof is False:
            return
        redis = _redis()
        timeout_ms = int(self.options.socket_timeout * 1000)
        try:
            with self.errors("waiting for the AOF fsync"):
                self._retrying(
                    lambda: self.client.execute_command("WAITAOF", 1, 0, max(1, timeout_ms - 100))
                )
            self.waitaof = True
        except RedisCommandError as exc:
            cause = exc.__cause__
            if isinstance(cause, redis.exceptions.ResponseError):
                self.waitaof = False  # unknown command, or appendonly is off
            else:
                raise


def _short(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


_CONNECTIONS: dict[RedisOptions, RedisConnection] = {}
_CONNECTIONS_LOCK = threading.Lock()


def connection_for(options: RedisOptions) -> RedisConnection:
    """The one connection of this process for these options."""
    with _CONNECTIONS_LOCK:
        conn = _CONNECTIONS.get(options)
        if conn is None:
            conn = _CONNECTIONS[options] = RedisConnection(options)
        return conn
