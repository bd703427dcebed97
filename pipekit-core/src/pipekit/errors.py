"""The exceptions pipekit raises, and the exit code each maps to."""

from __future__ import annotations

__all__ = [
    "PipekitError",
    "ConfigError",
    "PluginError",
    "LockTimeout",
    "StageFailed",
    "StageTimeout",
    "NonRetryable",
    "FencedOut",
    "LeaseLost",
    "BackendUnavailable",
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
