"""The protocols a backend implements (one per kind). Semantics above them
(skip decisions, retries, checkpoint formats) live once, in core."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Protocol

import attrs

__all__ = ["Lease", "LockBackend", "IdemRecord", "IdempotencyStore", "CheckpointStore"]


class Lease(Protocol):
    """A lock on one key. ``token`` is the fencing token of the current
    acquisition: it grows with every acquisition of that key."""

    key: str
    token: int | None

    def acquire(self, timeout: float | None = None) -> bool:
        """Take the lock, waiting up to ``timeout`` seconds (0: try once;
        None: wait forever). True when taken."""

    def release(self) -> None: ...

    def renew(self) -> None: ...

    def holder(self) -> str | None:
        """Who holds the lock now (e.g. ``pid 123 on host h``), where known."""

    def __enter__(self) -> Lease: ...

    def __exit__(self, *exc: object) -> None: ...


class LockBackend(Protocol):
    def lock(self, key: str, ttl: float | None = None) -> Lease: ...


@attrs.define
class IdemRecord:
    """One idempotency record. ``status`` is PENDING, SUCCESS or FAILED.

    ``owner`` identifies the caller whose claim made a PENDING record (a
    random id per claim); transitions compare it, so a caller whose claim was
    taken over cannot overwrite the newer result. ``fence`` and ``token`` are
    the lock key and fencing token under which the runner commits a stage
    record (see :class:`Lease`). ``error`` of a FAILED record is
    ``{"type", "message", "retryable"}``.
    """

    key: str
    status: str
    fingerprint: str
    result: Any = None
    error: Any = None
    created: float = 0.0
    expires: float | None = None
    token: int | None = None
    owner: str | None = None
    updated: float = 0.0
    fence: str | None = None


class IdempotencyStore(Protocol):
    """Records by key. An expired record reads as absent everywhere.

    Transitions are atomic per key: ``create`` is put-if-absent (the PENDING
    claim), ``replace`` is compare-and-swap on ``owner`` (complete, fail,
    takeover). ``put_many`` is the runner's unconditional batch commit of
    stage records, made while it holds each stage's lock; a store that
    tracks fencing tokens refuses (``pipekit.errors.FencedOut``) a record whose
    ``token`` is lower than the highest it has seen for that ``fence``.
    """

    def get(self, key: str) -> IdemRecord | None: ...

    def get_many(self, keys: Iterable[str]) -> dict[str, IdemRecord]: ...

    def create(self, record: IdemRecord) -> IdemRecord | None:
        """Store ``record`` if no live record has its key. Returns None when
        stored, else the live record that is there."""

    def replace(self, record: IdemRecord, *, expect_owner: str | None) -> bool:
        """Replace the live record of ``record.key`` if its ``owner`` equals
        ``expect_owner``. False (and nothing written) otherwise, or when there
        is no live record."""

    def put_many(self, records: Iterable[IdemRecord], *, durable: bool = True) -> None:
        """Store records atomically, replacing any with the same key; with
        ``durable`` they survive a power loss once this returns."""

    def delete(self, key: str) -> None: ...

    def keys(self) -> Iterator[str]:
        """Every key with a live record (order unspecified)."""

    def sweep(self, now: float | None = None) -> int:
        """Remove expired records; return how many."""


class CheckpointStore(Protocol):
    """A byte store: ``put`` is atomic (a reader sees old or new bytes).

    ``fence`` is ``(lock key, token)`` of the lease the writer holds; a store
    that tracks fencing tokens refuses (``pipekit.errors.FencedOut``) a put
    whose token is lower than the highest it has seen for that lock key.
    Core's ``CheckpointManager`` layers format, integrity and retention on top.
    """

    def put(
        self, namespace: str, id: str, data: bytes, *, fence: tuple[str, int] | None = None
    ) -> None: ...

    def get(self, namespace: str, id: str) -> bytes | None: ...

    def list(self, namespace: str) -> list[str]: ...

    def delete(self, namespace: str, id: str) -> None: ...
