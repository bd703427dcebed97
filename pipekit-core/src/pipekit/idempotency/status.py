"""What the manager says about one key."""

from __future__ import annotations

import time
from typing import Any

import attrs

from ..stores._protocols import IdemRecord

__all__ = ["IdempotencyStatus", "PENDING", "SUCCESS", "FAILED", "ABSENT"]

PENDING = "PENDING"
SUCCESS = "SUCCESS"
FAILED = "FAILED"
ABSENT = "ABSENT"


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


@attrs.frozen
class IdempotencyStatus:
    """One key's record as the manager sees it.

    ``state`` is ``PENDING``, ``SUCCESS``, ``FAILED`` or ``ABSENT`` (no live
    record). ``hit`` is True when a stored outcome answers the call (from
    :meth:`IdempotencyManager.begin`: a stored SUCCESS; from ``get``: a live
    SUCCESS or FAILED record), and False on a miss: from ``begin``, the
    caller now holds the PENDING claim (``owner``) and must run the
    operation, then ``complete`` or ``fail`` it. ``result`` is the stored
    JSON; ``error`` of a FAILED record is ``{"type", "message", "retryable"}``.
    """

    key: str
    state: str
    hit: bool = False
    fingerprint: str | None = None
    created: float | None = None
    updated: float | None = None
    expires: float | None = None
    owner: str | None = None
    result: Any = None
    error: Any = None

    @property
    def miss(self) -> bool:
        return not self.hit

    @property
    def ttl_left(self) -> float | None:
        """Seconds until the record expires (0 when it has); None: never."""
        if self.expires is None:
            return None
        return max(0.0, self.expires - time.time())

    @property
    def claimed(self) -> bool:
        """True when this status is a claim the caller holds (a miss from ``begin``)."""
        return self.state == PENDING and not self.hit and self.owner is not None

    @classmethod
    def of(
        cls, record: IdemRecord | None, key: str, *, hit: bool | None = None
    ) -> IdempotencyStatus:
        if record is None:
            return cls(key, ABSENT, hit=False)
        return cls(
            key=record.key,
            state=record.status,
            hit=record.status in (SUCCESS, FAILED) if hit is None else hit,
            fingerprint=record.fingerprint,
            created=record.created,
            updated=record.updated or record.created,
            expires=record.expires,
            owner=record.owner,
            result=record.result,
            error=record.error,
        )

    def to_json(self, *, with_result: bool = True) -> dict[str, Any]:
        """The status as JSON (``pipekit idem --json``): its fields, plus
        ``created_iso``, ``expires_iso`` and ``ttl_left`` rounded to ms."""
        ttl = self.ttl_left
        doc = attrs.asdict(self, recurse=False)
        doc.update(
            created_iso=_iso(self.created),
            expires_iso=_iso(self.expires),
            ttl_left=None if ttl is None else round(ttl, 3),
        )
        if not with_result:
            del doc["result"]
        return doc
