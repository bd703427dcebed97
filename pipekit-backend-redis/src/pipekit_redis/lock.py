"""Redis leases: ``SET key owner NX PX ttl`` with a fencing token.

- ``acquire`` is one script: take the key if free, increment the lock's
  fencing counter and return the new token (a retried acquire whose reply
  was lost finds its own owner value and returns the same token).
- ``release`` and ``renew`` are scripts that act only while the key still
  holds this lease's owner value.
- A renewal thread (one per backend) renews every held lease each third of
  its TTL. A lease is **lost** when a renewal finds another owner, or when
  its TTL has run out since the last renewal that succeeded (the process was
  paused, or Redis could not be reached): the runner checks ``lost`` before
  it commits, and the stores refuse writes carrying a token lower than the
  lock's counter, so a holder that lost its lease cannot overwrite the work
  of the runner that took over.
- A lock whose holder was a process of this machine (same boot, same PID
  namespace) that no longer runs is taken over at once instead of waiting
  for its TTL: a runner killed with SIGKILL, or one that could not release
  because Redis was down, does not hold up the next run on its machine.
"""

from __future__ import annotations

import heapq
import logging
import os
import threading
import time
import uuid
from typing import Any

from pipekit.errors import LeaseLost, PipekitError
from pipekit.idempotency.claimant import MACHINE, gone_local_claimant

from .connection import RedisConnection

__all__ = ["RedisLockBackend", "RedisLease"]

log = logging.getLogger("pipekit.redis.lock")
HOST = os.uname().nodename


DEFAULT_TTL = 60.0
SAFETY = 0.9
"""A lease counts as lost locally after this fraction of its TTL without a
successful renewal (clocks of client and server may run at slightly
different rates)."""


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class RedisLease:
    def __init__(self, backend: RedisLockBackend, key: str, ttl: float) -> None:
        self.key = key
        self.ttl = ttl
        self.token: int | None = None
        self._backend = backend
        self._conn = backend.conn
        self._rkey = self._conn.key("lock", key)
        self._fkey = self._conn.key("fence", key)
        self._owner: str | None = None
        self._valid_until = 0.0
        self._lost = False
        self._seen: tuple[float, str] | None = None
        self._mutex = threading.Lock()

    # -- state ------------------------------------------------------------------

    @property
    def held(self) -> bool:
        return self._owner is not None

    @property
    def lost(self) -> bool:
        """True when this lease was taken and can no longer be trusted: a
        renewal found another owner, or the TTL ran out since the last
        successful renewal."""
        if self._owner is None:
            return self._lost
        return self._lost or time.monotonic() > self._valid_until

    @property
    def ttl_ms(self) -> int:
        return max(1, int(self.ttl * 1000))

    # -- protocol -----------------------------------------------------------------

    def acquire(self, timeout: float | None = None) -> bool:
        if self._owner is not None:
            raise RuntimeError(f"lock {self.key!r} is already held by this lease")
        owner = f"{uuid.uuid4().hex}.{MACHINE or '-'} pid {os.getpid()} on host {HOST}"
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.002
        while True:
            started = time.monotonic()
            taken, value = self._conn.script(
                "acquire",
                [self._rkey, self._fkey],
                [owner, self.ttl_ms],
                f"taking the lock {self.key!r}",
            )
            if int(taken) == 1:
                with self._mutex:
                    self.token = int(value)
                    self._owner = owner
                    self._lost = False
                    self._valid_until = started + self.ttl * SAFETY
                self._backend.renewer.add(self)
                return True
            seen = _text(value)
            self._seen = (time.monotonic(), seen)
            dead = gone_local_claimant(seen)
            if dead is not None:
                # Its holder was killed here before it could release it (or
                # Redis was down then): no process can be using it. Taking
                # it over bumps the fencing token like any acquisition.
                freed = self._conn.script(
                    "release", [self._rkey], [seen], f"taking over the lock {self.key!r}"
                )
                if int(freed) == 1:
                    log.info(
                        "took over the lock %r from pid %d, which no longer runs", self.key, dead
                    )
                continue
            if deadline is not None and time.monotonic() >= deadline:
                return False
            pause = delay if deadline is None else min(delay, max(0.0, deadline - time.monotonic()))
            time.sleep(pause)
            delay = min(delay * 2, 0.1, self.ttl / 10)

    def release(self) -> None:
        with self._mutex:
            owner, self._owner = self._owner, None
        if owner is None:
            return
        self._backend.renewer.discard(self)
        try:
            self._conn.script("release", [self._rkey], [owner], f"releasing the lock {self.key!r}")
        except PipekitError as exc:  # it expires by itself
            log.warning(
                "could not release the lock %r (it expires in %gs): %s", self.key, self.ttl, exc
            )

    def renew(self) -> None:
        """Extend the lease to a full TTL from now; :class:`LeaseLost` when
        it is no longer this lease's."""
        if not self._renew_once():
            raise LeaseLost(
                f"the lock {self.key!r} was lost (it expired or another runner took it over)"
            )

    def _renew_once(self) -> bool:
        """One renewal; False when the lease is lost. Connection errors
        propagate (the lease may still be valid until its TTL runs out)."""
        owner = self._owner
        if owner is None:
            return False
        if self.lost:
            self._lost = True
            return False
        started = time.monotonic()
        ok = self._conn.script(
            "renew",
            [self._rkey],
            [owner, self.ttl_ms],
            f"renewing the lock {self.key!r}",
            budget=max(0.0, self._valid_until - started),  # no use once the lease ran out
        )
        with self._mutex:
            if self._owner != owner:
                return False
            if int(ok) != 1:
                self._lost = True
                return False
            self._valid_until = started + self.ttl * SAFETY
            return True

    def holder(self) -> str | None:
        seen = self._seen
        if seen is not None and time.monotonic() - seen[0] < 0.5:
            value: str | None = seen[1]
        else:
            raw = self._conn.call(lambda c: c.get(self._rkey), f"reading the lock {self.key!r}")
            value = None if raw is None else _text(raw)
        if not value:
            return None
        parts = value.split(" ", 1)
        return parts[1] if len(parts) == 2 else None

    def holder_state(self) -> str:
        """``alive`` while the lock key holds a lease with time left (its
        holder renewed it within its TTL), unless that holder was a process
        of this machine that no longer runs: ``gone``, as when the key is
        absent (expired or released); ``unknown`` for a key that never
        expires (not set by pipekit)."""

        def build(pipe: Any) -> None:
            pipe.get(self._rkey)
            pipe.pttl(self._rkey)

        value, ttl_ms = self._conn.pipeline(build, f"reading the lock {self.key!r}")
        if value is None or ttl_ms == -2:
            return "gone"
        text = _text(value)
        self._seen = (time.monotonic(), text)
        if gone_local_claimant(text) is not None:
            return "gone"
        return "alive" if ttl_ms > 0 else "unknown"

    def __enter__(self) -> RedisLease:
        if self._owner is None:
            self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"<RedisLease {self.key!r} token={self.token} held={self.held}>"


class _Renewer:
    """One daemon thread that renews the held leases of a backend, each
    every third of its TTL (sooner after a failure)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._due: list[tuple[float, int, RedisLease]] = []
        self._leases: dict[int, RedisLease] = {}
        self._thread: threading.Thread | None = None

    def add(self, lease: RedisLease) -> None:
        with self._cond:
            self._leases[id(lease)] = lease
            entry = (time.monotonic() + lease.ttl / 3, id(lease), lease)
            heapq.heappush(self._due, entry)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._loop, name="pipekit-redis-renew", daemon=True
                )
                self._thread.start()
            elif self._due[0] is entry:
                self._cond.notify()  # due sooner than what the thread waits for

    def discard(self, lease: RedisLease) -> None:
        with self._cond:
            self._leases.pop(id(lease), None)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while True:
                    while self._due and id(self._due[0][2]) not in self._leases:
                        heapq.heappop(self._due)
                    if not self._due:
                        self._cond.wait(5.0)
                        if not self._due and not self._leases:
                            self._thread = None
                            return
                        continue
                    wait = self._due[0][0] - time.monotonic()
                    if wait <= 0:
                        _, ident, lease = heapq.heappop(self._due)
                        if self._leases.get(ident) is not lease:
                            continue
                        break
                    self._cond.wait(wait)
            retry_in = lease.ttl / 3
            try:
                if not lease._renew_once():
                    log.warning("lost the lock %r (it expired or was taken over)", lease.key)
                    self.discard(lease)
                    continue
            except Exception as exc:
                # Redis unreachable: try again soon; the lease stays valid
                # until its TTL runs out since the last renewal.
                retry_in = max(0.05, lease.ttl / 10)
                log.warning("could not renew the lock %r: %s", lease.key, exc)
                if lease.lost:
                    self.discard(lease)
                    continue
            with self._cond:
                if self._leases.get(id(lease)) is lease:
                    heapq.heappush(self._due, (time.monotonic() + retry_in, id(lease), lease))


class RedisLockBackend:
    def __init__(self, conn: RedisConnection, ttl: float | None = None) -> None:
        self.conn = conn
        self.ttl = ttl
        self.renewer = _Renewer()

    def lock(self, key: str, ttl: float | None = None) -> RedisLease:
        return RedisLease(self, key, self.ttl or ttl or DEFAULT_TTL)

    def connect(self) -> None:
        self.conn.connect()

    def doctor(self) -> list[Any]:
        from .doctor import checks

        return checks(self.conn, "locks")
