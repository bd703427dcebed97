"""The protocols a backend implements (one per kind). Semantics above them
(skip decisions, retries, checkpoint formats) live once, in core."""

from __future__ import annotations

from collections.abc import Iterable
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
    """One idempotency record. ``status`` is PENDING, SUCCESS or FAILED."""

    key: str
    status: str
    fingerprint: str
    result: Any = None
    error: str | None = None
    created: float = 0.0
    expires: float | None = None
    token: int | None = None


class IdempotencyStore(Protocol):
    def get(self, key: str) -> IdemRecord | None: ...

    def get_many(self, keys: Iterable[str]) -> dict[str, IdemRecord]: ...

    def put_many(self, records: Iterable[IdemRecord], *, durable: bool = True) -> None:
        """Store records atomically, replacing any with the same key; with
        ``durable`` they survive a power loss once this returns."""

    def delete(self, key: str) -> None: ...


class CheckpointStore(Protocol):
    """A byte store: ``put`` is atomic (a reader sees old or new bytes)."""

    def put(self, namespace: str, id: str, data: bytes) -> None: ...

    def get(self, namespace: str, id: str) -> bytes | None: ...

    def list(self, namespace: str) -> list[str]: ...

    def delete(self, namespace: str, id: str) -> None: ...
