"""The exceptions pipekit raises, and the exit code each maps to."""

from __future__ import annotations

import errno
import os
import time

__all__ = [
    "PipekitError",
    "ConfigError",
    "PluginError",
    "LockTimeout",
    "StageFailed",
    "StageTimeout",
    "NonRetryable",
    "FencedOut",
    "StateError",
    "StateReadError",
    "StateValidationError",
    "StateLockError",
    "NetworkRefused",
    "IdempotencyError",
    "IdempotencyInProgress",
    "IdempotencyConflict",
    "IdempotencyFailed",
    "IdempotencyClaimLost",
    "LeaseLost",
    "BackendUnavailable",
    "StorageError",
    "storage_error",
    "is_network_refusal",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_LOCK = 3
EXIT_INTERRUPTED = 130


class PipekitError(Exception):
    """Base of every error pipekit reports to a user (a message, never a traceback)."""

    exit_code = EXIT_FAILED


class ConfigError(PipekitError):
    """The pipeline file, an option or the plugin set is wrong; nothing ran."""

    exit_code = EXIT_USAGE


class PluginError(ConfigError):
    """A plugin could not be loaded, or registered a name that is already taken."""


class LockTimeout(PipekitError):
    """A lock could not be taken in time."""

    exit_code = EXIT_LOCK


class FencedOut(PipekitError):
    """A write carried a fencing token lower than one the store has already
    seen for that lock: this holder's lease expired and another took over,
    so its write is refused (the attempt fails; nothing is overwritten).

    ``keys`` names the refused records when a batch was partly refused (the
    others were stored); empty when the whole write was refused."""

    def __init__(self, message: str, *, keys: tuple[str, ...] | list[str] = ()) -> None:
        super().__init__(message)
        self.keys = tuple(keys)


class BackendUnavailable(PipekitError):
    """The backend (e.g. a Redis server) cannot be reached. At the start of a
    command this ends it with exit code 2; during a run it fails the stage
    that needed it."""

    exit_code = EXIT_USAGE


class StateError(PipekitError):
    """A :class:`pipekit.PipelineState` operation failed; the state file is
    unchanged unless the message says otherwise."""

    def __init__(self, message: str, *, path: object = None) -> None:
        super().__init__(message)
        self.path = path


class StateReadError(StateError):
    """The state file exists but cannot be read or does not parse.

    ``backup`` is the newest backup that does parse (a path), or None."""

    def __init__(self, message: str, *, path: object = None, backup: object = None) -> None:
        super().__init__(message, path=path)
        self.backup = backup


class StateValidationError(StateError):
    """New state data failed the schema; nothing was written.

    ``problems`` lists ``(field path, message)`` pairs, ``"$"`` being the
    top level (e.g. ``("$.stages.copy.attempts", "expected an integer")``)."""

    exit_code = EXIT_USAGE

    def __init__(
        self, message: str, *, path: object = None, problems: list[tuple[str, str]] | None = None
    ) -> None:
        super().__init__(message, path=path)
        self.problems = list(problems or [])


class StateLockError(StateError, LockTimeout):
    """The state file's lock could not be taken within ``lock_timeout``.

    ``holder`` says who holds it (``"pid 123 on host h"``) when known."""

    exit_code = EXIT_LOCK

    def __init__(self, message: str, *, path: object = None, holder: str | None = None) -> None:
        super().__init__(message, path=path)
        self.holder = holder


class StageFailed(PipekitError):
    """An attempt of a stage failed (the runner may retry it)."""


class LeaseLost(StageFailed):
    """The stage's lease expired (or was taken over) while it worked: the
    attempt fails and nothing of it is committed, since another runner may
    hold the lock now."""

    @classmethod
    def of(cls, lease: object) -> LeaseLost:
        key = getattr(lease, "key", "?")
        return cls(
            f"lost the stage's lock {key!r} while it worked (its lease expired: the "
            "process was paused, or the backend unreachable, for longer than the lock's "
            "TTL); another runner may have taken the stage over, so nothing was committed. "
            "Run again (and raise the backend's lock_ttl if stages pause this long)"
        )


class StageTimeout(StageFailed):
    """An attempt ran past the stage's ``timeout`` and was stopped."""


class NonRetryable(Exception):
    """Raise (or subclass) this in a processor for a failure that retrying cannot fix.

    The runner does not retry an attempt that failed with it.
    """


class NetworkRefused(NonRetryable, PermissionError):
    """The network guard refused what a processor tried: a connection, a
    name look-up or a program outside the stage's allowed network (see
    docs/offline.md). A ``PermissionError``, so that code which handles
    network failures sees one; the stage fails with this message even when
    the processor catches it, and is not retried."""


class IdempotencyError(PipekitError):
    """Base of the errors of :mod:`pipekit.idempotency`. ``key`` is the
    idempotency key concerned."""

    def __init__(self, message: str, *, key: str = "") -> None:
        super().__init__(message)
        self.key = key


class IdempotencyInProgress(IdempotencyError):
    """Another caller holds the key's PENDING claim and did not finish within
    the wait. ``owner``, ``created`` and ``expires`` describe that claim: after
    ``expires`` the next caller takes it over."""

    def __init__(
        self, key: str, *, owner: str | None, created: float | None, expires: float | None
    ) -> None:
        now = time.time()
        age = f" {now - created:.1f}s ago" if created else ""
        after = f"; it can be taken over in {max(0.0, expires - now):.1f}s" if expires else ""
        super().__init__(
            f"idempotency key {key!r} is in progress (claimed{age} by {owner or 'another caller'})"
            f"{after}. Wait and retry, or raise the wait",
            key=key,
        )
        self.owner = owner
        self.created = created
        self.expires = expires


class IdempotencyConflict(IdempotencyError):
    """The key is stored with another request's fingerprint: the same key was
    used for different arguments. Never answered with the other request's
    result."""

    def __init__(self, key: str, *, stored: str, given: str) -> None:
        super().__init__(
            f"idempotency key {key!r} was already used with different arguments (stored "
            f"fingerprint {stored[:16]}..., this call {given[:16]}...). A key must name one "
            "request: use a new key for new arguments, or forget the old record "
            f"(pipekit idem forget {key!r})",
            key=key,
        )
        self.stored_fingerprint = stored
        self.fingerprint = given


class IdempotencyFailed(IdempotencyError):
    """The key's operation failed before and its failure is replayed until the
    FAILED record expires (``failed_ttl``). ``error_type`` and
    ``error_message`` are the stored error's (the original exception is not
    re-created: results and errors are stored as JSON, never pickled)."""

    def __init__(
        self, key: str, *, error_type: str, error_message: str, expires: float | None
    ) -> None:
        until = f" for {max(0.0, expires - time.time()):.0f}s more" if expires is not None else ""
        super().__init__(
            f"idempotency key {key!r} failed before with {error_type}: {error_message}. "
            f"The failure is replayed{until}; to run it again sooner, forget the key "
            f"(pipekit idem forget {key!r})",
            key=key,
        )
        self.error_type = error_type
        self.error_message = error_message
        self.expires = expires


class IdempotencyClaimLost(IdempotencyError):
    """``complete`` or ``fail`` came after this caller's claim was taken over
    (its PENDING record outlived ``pending_timeout``) or replaced: the newer
    record stays, this outcome is not stored. ``current`` is what is stored."""

    def __init__(self, key: str, *, current: object = None) -> None:
        super().__init__(
            f"idempotency key {key!r}: this caller's claim was taken over by another caller "
            "after its pending timeout; its outcome was not stored (the newer record stays). "
            "Raise pending_timeout above the operation's longest run",
            key=key,
        )
        self.current = current


class StorageError(PipekitError):
    """pipekit could not write (or read) one of its own files: a read-only
    or full file system, or no permission. One line naming the path and the
    cause; nothing that is not durable was committed."""

    def __init__(self, message: str, *, path: str | None = None, errno: int | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.errno = errno


_STORAGE_HINTS = {
    "EROFS": "the file system is mounted read-only",
    "ENOSPC": "the disk is full; free some space and run again",
    "EDQUOT": "the disk quota is used up; free some space and run again",
    "EACCES": "no permission; check the owner and mode of the folder",
    "EPERM": "no permission; check the owner and mode of the folder",
    "EFBIG": "the file is larger than the file system allows",
    "EIO": "an input/output error of the device",
}
STORAGE_ERRNOS = frozenset(getattr(errno, name) for name in _STORAGE_HINTS if hasattr(errno, name))
"""The ``OSError`` numbers that say the storage, not pipekit, is the problem."""


def storage_error(exc: BaseException, path: object = None) -> StorageError | None:
    """The :class:`StorageError` that ``exc`` (an ``OSError`` about
    ``path``, or the path the error names) stands for; None when ``exc``
    is not a failure of the storage."""
    if isinstance(exc, StorageError):
        return exc
    if not isinstance(exc, OSError) or exc.errno not in STORAGE_ERRNOS:
        return None
    if isinstance(exc, NetworkRefused):
        return None
    where = exc.filename if exc.filename is not None else path
    if where is not None and ".pipekit-tmp-" in os.path.basename(str(where)):
        where = os.path.dirname(str(where))  # a temp file's name says nothing
    name = errno.errorcode.get(exc.errno or 0, "")
    cause = exc.strerror or str(exc)
    hint = _STORAGE_HINTS.get(name)
    what = f"cannot write {where}" if where is not None else "cannot write pipekit's files"
    message = f"{what}: {cause}" + (f" ({hint})" if hint and hint != cause else "")
    return StorageError(message, path=None if where is None else str(where), errno=exc.errno)


def is_network_refusal(exc: BaseException | None) -> bool:
    """Whether ``exc`` is, or wraps, a :class:`NetworkRefused` (the network
    guard's refusal): through ``__cause__``, ``__context__`` and a
    ``reason`` attribute (``urllib.error.URLError`` keeps the socket's error
    there). A refusal is never retryable, however wrapped."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, NetworkRefused):
            return True
        todo += [current.__cause__, current.__context__]
        reason = getattr(current, "reason", None)
        if isinstance(reason, BaseException):
            todo.append(reason)
    return False
