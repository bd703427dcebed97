"""The protocols a backend implements (one per kind). Semantics above them
(skip decisions, retries, checkpoint formats) live once, in core."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Protocol

import attrs

__all__ = [
    "Lease",
    "LockBackend",
    "IdemRecord",
    "IdempotencyStore",
    "CheckpointStore",
    "DeadLetter",
    "DEAD_LETTER_FIELDS",
    "DeadLetterStore",
]


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

    def holder_state(self) -> str:
        """Whether whoever holds the lock now is working, asked by a
        waiter (a lease that does not hold it) whose wait is long:

        - ``"alive"``: the lock is held and its holder demonstrably alive
          (an OS lock held by a process that runs; a lease renewed within
          its TTL): the waiter keeps waiting;
        - ``"gone"``: nobody holds it, or its holder is known to be dead
          (e.g. a process of this machine that no longer runs, a lease that
          expired);
        - ``"unknown"``: neither can be told.

        The runner treats a lease without this method as ``"unknown"``."""

    def __enter__(self) -> Lease: ...

    def __exit__(self, *exc: object) -> None: ...


class LockBackend(Protocol):
    def lock(self, key: str, ttl: float | None = None) -> Lease: ...


@attrs.define
class IdemRecord:
    """One idempotency record.

    - ``key``: ``operation:hash`` (or a caller's own key, as given).
    - ``status``: ``PENDING`` (claimed, running), ``SUCCESS`` or ``FAILED``.
    - ``fingerprint``: hash of the request's arguments; the same key with
      another fingerprint is a conflict (the manager refuses it).
    - ``result``: the JSON value of a SUCCESS (cattrs-unstructured; never
      pickled). ``error`` of a FAILED record: ``{"type", "message",
      "retryable"}``.
    - ``created``: when the first claim was made; ``updated``: the last
      transition; ``expires``: when the record stops being live (None:
      never). Times are seconds since the epoch.
    - ``owner``: a random id per claim; transitions compare it
      (:meth:`IdempotencyStore.replace`), so a caller whose claim was taken
      over cannot overwrite the newer result.
    - ``fence`` and ``token``: the lock key and fencing token under which
      the runner committed a stage record (see :class:`Lease`).
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
    """Records by key: the storage under :class:`pipekit.IdempotencyManager`.

    A store keeps records and makes each transition atomic per key; every
    semantic above that (waiting, takeover of stale claims, fingerprint
    conflicts, FAILED replay, TTLs, result (un)structuring) lives once in
    core's manager, so that every store behaves alike.

    - A record is **live** until ``expires`` (seconds since the epoch; None:
      never). An expired record reads as absent everywhere: ``get``,
      ``get_many``, ``keys``, and ``create`` (which may overwrite it) and
      ``replace`` (which must refuse it). Stores with native expiry (Redis TTL)
      may drop it earlier than ``sweep`` would; the file store keeps it on
      disk until ``sweep`` or an overwrite.
    - A record that cannot be read (damaged) reads as absent: the work then
      runs again, which is always safe.
    - Implementations must be safe to use from several threads and, for a
      store shared by processes or machines, from all of them at once.
    """

    def get(self, key: str) -> IdemRecord | None:
        """The live record of ``key``, or None."""

    def get_many(self, keys: Iterable[str]) -> dict[str, IdemRecord]:
        """The live records among ``keys``, by key (absent keys left out)."""

    def create(self, record: IdemRecord) -> IdemRecord | None:
        """Put-if-absent (the PENDING claim): store ``record`` unless a live
        record has its key. Returns None when stored, else the live record
        that is there (unchanged). Of any number of concurrent creators of
        one key, exactly one gets None."""

    def replace(self, record: IdemRecord, *, expect_owner: str | None) -> bool:
        """Compare-and-swap on ``owner`` (complete, fail, takeover of a
        retryable FAILED record): replace the live record of ``record.key``
        with ``record`` if the live record's ``owner`` equals
        ``expect_owner``, atomically with that comparison. False, and nothing
        written, when the owner differs or there is no live record."""

    def put_many(self, records: Iterable[IdemRecord], *, durable: bool = True) -> None:
        """The runner's batch commit of stage records: store each record,
        unconditionally replacing any with the same key, each atomically
        (never half-written); with ``durable`` they survive a power loss once
        this returns. The runner holds each stage's lock while it commits; a
        store that tracks fencing tokens refuses (``pipekit.errors.FencedOut``)
        a record whose ``token`` is lower than the highest it has seen for
        that ``fence``."""

    def delete(self, key: str) -> None:
        """Remove the record of ``key`` (live or not); no error when absent.
        Changes :meth:`generation`."""

    def keys(self) -> Iterator[str]:
        """Every key with a live record (order unspecified)."""

    def sweep(self, now: float | None = None) -> int:
        """Remove records expired at ``now`` (default: the current time) and
        return how many. Changes :meth:`generation` when it removed any."""

    def generation(self) -> str | None:
        """A token that changes whenever a record is removed (``delete``,
        ``sweep``, or the store being wiped). The runner remembers, per stage,
        the generation under which it saw the stage's SUCCESS record, and
        trusts that memory (no read per stage) only while the generation is
        unchanged. None means "unknown": nothing is trusted, every decision
        reads the store. It must be cheap: the runner reads it once per run."""


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


@attrs.define
class DeadLetter:
    """A record that a record stage could not process after its retries.

    A dead letter is identified by ``(pipeline, stage, fingerprint,
    input_index, offset)``: the stage execution it belongs to and where its
    record starts (``offset`` is a byte offset into input ``input_index``,
    whose pipeline-relative path is ``input``; ``line`` is 1-based). ``record``
    holds the record's raw bytes exactly as read (without the newline);
    ``format`` is the processor's (``lines`` or ``jsonl``). ``id`` is given by
    the store. Times are Unix times.
    """

    pipeline: str
    stage: str
    fingerprint: str
    run_id: str
    input: str
    input_index: int
    offset: int
    line: int
    format: str
    record: bytes
    error_type: str
    message: str
    traceback: str
    attempts: int
    first_failed: float
    last_failed: float
    id: int | None = None


DEAD_LETTER_FIELDS = tuple(a.name for a in attrs.fields(DeadLetter) if a.name != "id")
"""What a store keeps of a :class:`DeadLetter` besides the ``id`` it gives."""


class DeadLetterStore(Protocol):
    """Dead letters (see :class:`DeadLetter`).

    ``add`` is an upsert on the identity ``(pipeline, stage, fingerprint,
    input_index, offset)``: adding a dead letter that is already there
    replaces its error, attempts, run and last failure time (keeping the
    first failure time and the id), so a record processed again after a
    resume is never queued twice. It must be durable when it returns: the
    runner saves a checkpoint past the record only after ``add`` returned.
    ``purge`` deletes by pipeline and, when given, stage, fingerprint, and
    position: ``from_position=(input_index, offset)`` deletes only dead
    letters at or after that position (what a resumed stage will process
    again). ``list`` returns them ordered by stage, input_index, offset.
    """

    def add(self, letter: DeadLetter) -> int:
        """Store ``letter``; return its id."""

    def list(
        self,
        pipeline: str,
        *,
        stage: str | None = None,
        fingerprint: str | None = None,
        limit: int | None = None,
    ) -> list[DeadLetter]: ...

    def get(self, pipeline: str, id: int) -> DeadLetter | None: ...

    def delete(self, pipeline: str, ids: Iterable[int]) -> int:
        """Delete the given ids; return how many were there."""

    def purge(
        self,
        pipeline: str,
        *,
        stage: str | None = None,
        fingerprint: str | None = None,
        from_position: tuple[int, int] | None = None,
    ) -> int:
        """Delete the matching dead letters; return how many."""

    def count(
        self, pipeline: str, *, stage: str | None = None, fingerprint: str | None = None
    ) -> int: ...
