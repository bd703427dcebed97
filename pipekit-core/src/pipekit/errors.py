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
    "StateError",
    "StateReadError",
    "StateValidationError",
    "StateLockError",
    "NetworkRefused",
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
    so its write is refused (the attempt fails; nothing is overwritten)."""


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
