"""The idempotency manager: Stripe's semantics over any
:class:`~pipekit.stores._protocols.IdempotencyStore` (see docs/idempotency.md).

``complete``/``fail`` compare-and-swap on the claim's owner, so a caller
whose claim was taken over cannot overwrite the newer record; a claim that
merely expired, with nobody claiming since, still stores its outcome.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import (
    IdempotencyClaimLost,
    IdempotencyConflict,
    IdempotencyError,
    IdempotencyFailed,
    IdempotencyInProgress,
    NonRetryable,
)
from ..stores._protocols import IdemRecord
from . import codec
from .claimant import gone_local_claimant, new_owner
from .status import FAILED, PENDING, SUCCESS, IdempotencyStatus

__all__ = [
    "IdempotencyManager",
    "open_store",
    "default_store_dir",
    "DEFAULT_TTL",
    "DEFAULT_FAILED_TTL",
    "DEFAULT_PENDING_TIMEOUT",
]

log = logging.getLogger("pipekit.idempotency")

DEFAULT_TTL = 24 * 3600.0
DEFAULT_FAILED_TTL = 3600.0
DEFAULT_PENDING_TIMEOUT = 300.0
ENV_DIR = "PIPEKIT_IDEMPOTENCY_DIR"
_POLL_MIN = 0.001
_POLL_MAX = 0.05

_stores: dict[str, Any] = {}
_stores_lock = threading.Lock()


def default_store_dir() -> Path:
    """``$PIPEKIT_IDEMPOTENCY_DIR``, else ``./.pipekit/idempotency`` (the
    same folder as the file backend of a pipeline in the current folder with
    the default ``state_dir``)."""
    env = os.environ.get(ENV_DIR)
    return Path(env) if env else Path.cwd() / ".pipekit" / "idempotency"


def open_store(store: Any = None) -> Any:
    """A store object as given, or a file store at a path (``str`` or
    ``PathLike``), or the default file store (:func:`default_store_dir`).
    File stores are shared per absolute folder within a process."""
    if store is not None and not isinstance(store, (str, os.PathLike)):
        missing = [m for m in ("get", "create", "replace", "delete") if not hasattr(store, m)]
        if missing:
            raise TypeError(
                f"store= must be an idempotency store or a folder path; {type(store).__name__} "
                f"has no {', '.join(missing)}"
            )
        return store
    root = Path(store) if store is not None else default_store_dir()
    root = root.absolute()
    key = os.fspath(root)
    with _stores_lock:
        found = _stores.get(key)
        if found is None:
            from ..stores._file_idempotency import FileIdempotencyStore

            found = _stores[key] = FileIdempotencyStore(root)
    return found


def validate_times(
    ttl: float | None, failed_ttl: float, pending_timeout: float, wait: float | None
) -> None:
    for name, value in (("failed_ttl", failed_ttl), ("pending_timeout", pending_timeout)):
        if not value > 0:
            raise ValueError(f"{name} must be > 0 seconds, not {value!r}")
    if ttl is not None and not ttl > 0:
        raise ValueError(f"ttl must be > 0 seconds or None (forever), not {ttl!r}")
    if wait is not None and wait < 0:
        raise ValueError(f"wait must be >= 0 seconds, not {wait!r}")


def check_key(key: object) -> None:
    """Refuse a key that is not a non-empty string (``ValueError``)."""
    if not isinstance(key, str) or not key:
        raise ValueError(
            f"an idempotency key must be a non-empty string, not {key!r}: a key names one "
            "operation (make_key(operation, ...) builds one)"
        )


class Backoff:
    """The pauses of a caller waiting for another caller's claim: doubling
    from 1 ms to 50 ms, never past the wait's end, waking when the claim
    expires."""

    def __init__(self, wait: float) -> None:
        self.deadline = time.monotonic() + wait
        self.delay = _POLL_MIN

    def pause(self, busy: IdempotencyInProgress) -> float:
        """Seconds to sleep before the next attempt; raises ``busy`` when the
        wait is over."""
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise busy
        sleep = min(self.delay, left)
        if busy.expires is not None:
            sleep = min(sleep, max(0.0, busy.expires - time.time()) + 0.001)
        self.delay = min(self.delay * 2, _POLL_MAX)
        return max(sleep, 0.0005)


class IdempotencyManager:
    """Idempotency over ``store`` (a store object, a folder path, or None for
    the default folder). ``ttl`` keeps a SUCCESS (None: forever),
    ``failed_ttl`` a FAILED, ``pending_timeout`` bounds how long a claim
    lives before another caller may take it over, and ``wait`` how long
    ``begin`` waits for another caller's claim (default: ``pending_timeout``,
    so a waiter ends with the outcome or a takeover)."""

    def __init__(
        self,
        store: Any = None,
        *,
        ttl: float | None = DEFAULT_TTL,
        failed_ttl: float = DEFAULT_FAILED_TTL,
        pending_timeout: float = DEFAULT_PENDING_TIMEOUT,
        wait: float | None = None,
    ) -> None:
        validate_times(ttl, failed_ttl, pending_timeout, wait)
        self.store = open_store(store)
        self.ttl = ttl
        self.failed_ttl = failed_ttl
        self.pending_timeout = pending_timeout
        self.wait = pending_timeout if wait is None else wait

    def __repr__(self) -> str:
        return f"IdempotencyManager({self.store!r})"

    # -- the call protocol ----------------------------------------------------------

    def begin(
        self, key: str, fingerprint: str = "", *, wait: float | None = None
    ) -> IdempotencyStatus:
        """Claim ``key`` or get its stored outcome (see the module's doc).

        Returns a hit (``status.hit``: ``status.result`` is the stored JSON)
        or a miss (the caller holds the claim: run, then :meth:`complete` or
        :meth:`fail` with this status). Raises :class:`IdempotencyConflict`,
        :class:`IdempotencyFailed`, or :class:`IdempotencyInProgress` when
        another caller's claim outlives ``wait`` (``0``: do not wait)."""
        check_key(key)
        backoff = Backoff(self.wait if wait is None else wait)
        while True:
            try:
                return self.try_begin(key, fingerprint)
            except IdempotencyInProgress as busy:
                time.sleep(backoff.pause(busy))

    def try_begin(self, key: str, fingerprint: str = "") -> IdempotencyStatus:
        """One attempt of :meth:`begin`, without waiting: a live PENDING
        claim of another caller raises :class:`IdempotencyInProgress` at once."""
        check_key(key)
        store = self.store
        existing = store.get(key)  # a hit or a busy key (what waiters poll): no write
        if existing is not None and existing.status == SUCCESS:
            if existing.fingerprint != fingerprint:
                raise IdempotencyConflict(key, stored=existing.fingerprint, given=fingerprint)
            return IdempotencyStatus.of(existing, key, hit=True)
        now = time.time()
        claim = IdemRecord(
            key=key,
            status=PENDING,
            fingerprint=fingerprint,
            created=now,
            updated=now,
            expires=now + self.pending_timeout,
            owner=new_owner(),
        )
        if existing is None:
            existing = store.create(claim)
        for _ in range(100):  # each turn another caller changed the record under us
            if existing is None:
                return IdempotencyStatus.of(claim, key, hit=False)
            if existing.fingerprint != fingerprint:
                raise IdempotencyConflict(key, stored=existing.fingerprint, given=fingerprint)
            if existing.status == SUCCESS:
                return IdempotencyStatus.of(existing, key, hit=True)
            if existing.status == FAILED:
                error = existing.error if isinstance(existing.error, dict) else {}
                if not error.get("retryable"):
                    raise IdempotencyFailed(
                        key,
                        error_type=str(error.get("type", "Error")),
                        error_message=str(error.get("message", existing.error)),
                        expires=existing.expires,
                    )
                if store.replace(claim, expect_owner=existing.owner):
                    return IdempotencyStatus.of(claim, key, hit=False)
            elif existing.status == PENDING:
                gone = gone_local_claimant(existing.owner)
                if gone is None:
                    raise IdempotencyInProgress(
                        key,
                        owner=existing.owner,
                        created=existing.created,
                        expires=existing.expires,
                    )
                if store.replace(claim, expect_owner=existing.owner):
                    log.info("idempotency key %r: took over the claim of pid %d (gone)", key, gone)
                    return IdempotencyStatus.of(claim, key, hit=False)
            else:
                raise IdempotencyError(
                    f"idempotency key {key!r} has a record in an unknown state "
                    f"{existing.status!r}; forget it (pipekit idem forget {key!r})",
                    key=key,
                )
            existing = store.get(key)
            if existing is None:
                existing = store.create(claim)
        raise IdempotencyError(f"idempotency key {key!r}: the record keeps changing", key=key)

    def complete(
        self, claim: IdempotencyStatus, result: Any = None, *, result_type: Any = Any
    ) -> IdempotencyStatus:
        """Store ``result`` (of ``result_type``, structured to JSON through
        cattrs) as the claim's SUCCESS, kept for ``ttl``. ``TypeError``, with
        nothing written, when it has no JSON form; :class:`IdempotencyClaimLost`
        when the claim was taken over."""
        data = codec.dump(result, result_type)
        return self._finish(claim, SUCCESS, data, None, self.ttl)

    def fail(
        self, claim: IdempotencyStatus, error: BaseException | str, *, retryable: bool = False
    ) -> IdempotencyStatus:
        """Store the claim's FAILED record, kept for ``failed_ttl``. A
        non-retryable failure is replayed (:class:`IdempotencyFailed`) to every
        caller of the key until it expires; a retryable one only records the
        error: the next caller takes the key over and runs."""
        kind = codec.type_name(type(error)) if isinstance(error, BaseException) else "Error"
        doc = {"type": kind, "message": str(error), "retryable": retryable}
        return self._finish(claim, FAILED, None, doc, self.failed_ttl)

    def release(self, claim: IdempotencyStatus, reason: str = "released") -> IdempotencyStatus:
        """Give the claim up without an outcome (the operation did not
        finish, e.g. it was cancelled): the next caller runs at once."""
        doc = {"type": "Released", "message": reason, "retryable": True}
        return self._finish(claim, FAILED, None, doc, self.failed_ttl)

    def _finish(
        self,
        claim: IdempotencyStatus,
        state: str,
        result: Any,
        error: Any,
        ttl: float | None,
    ) -> IdempotencyStatus:
        if not claim.claimed:
            raise ValueError(
                f"complete/fail/release take the status of a claim that begin() returned as a "
                f"miss; this one is {claim.state} (hit={claim.hit})"
            )
        now = time.time()
        rec = IdemRecord(
            key=claim.key,
            status=state,
            fingerprint=claim.fingerprint or "",
            result=result,
            error=error,
            created=claim.created or now,
            updated=now,
            expires=None if ttl is None else now + ttl,
            owner=claim.owner,
        )
        if self.store.replace(rec, expect_owner=claim.owner):
            return IdempotencyStatus.of(rec, claim.key, hit=False)
        # Our claim is no longer the live record. If nobody holds the key (it
        # expired, or was forgotten), our outcome is still the best there is.
        if self.store.create(rec) is None:
            return IdempotencyStatus.of(rec, claim.key, hit=False)
        current = self.get(claim.key)
        raise IdempotencyClaimLost(claim.key, current=current)

    # -- inspection and upkeep --------------------------------------------------------

    def get(self, key: str) -> IdempotencyStatus:
        """The key's live record as a status (state ``ABSENT`` when none)."""
        return IdempotencyStatus.of(self.store.get(key), key)

    def list(self, prefix: str = "") -> Iterator[IdempotencyStatus]:
        """Statuses of every live record whose key starts with ``prefix``,
        sorted by key."""
        keys = sorted(k for k in self.store.keys() if k.startswith(prefix))  # noqa: SIM118
        found = self.store.get_many(keys)
        for key in keys:
            rec = found.get(key)
            if rec is not None:
                yield IdempotencyStatus.of(rec, key)

    def forget(self, key: str) -> bool:
        """Remove the key's record (live or expired); True when a live one
        was there. The next caller runs the operation again; for a stage
        record, the next ``pipekit run`` reruns that stage."""
        existed = self.store.get(key) is not None
        self.store.delete(key)
        return existed

    def sweep(self, now: float | None = None) -> int:
        """Remove expired records; return how many."""
        return int(self.store.sweep(now))


def is_retryable(exc: BaseException, retryable: Any) -> bool:
    """Whether a failure with ``exc`` is retryable under ``retryable`` (a
    tuple of exception types or a predicate). :class:`pipekit.NonRetryable`
    never is; an exception that is not an ``Exception`` (cancellation,
    ``KeyboardInterrupt``) always is: the operation did not finish."""
    if not isinstance(exc, Exception):
        return True
    if isinstance(exc, NonRetryable):
        return False
    if callable(retryable) and not isinstance(retryable, (type, tuple)):
        return bool(retryable(exc))
    return isinstance(exc, retryable)
