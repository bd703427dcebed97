"""The errors of the checkpoint manager (all :class:`pipekit.PipekitError`)."""

from __future__ import annotations

from ..errors import EXIT_USAGE, ConfigError, PipekitError

__all__ = [
    "CheckpointError",
    "CheckpointNotFound",
    "CheckpointCorrupted",
    "CheckpointVersionError",
    "CheckpointDecryptError",
    "CheckpointConfigError",
    "CheckpointStateError",
]


class CheckpointError(PipekitError):
    """Base of every checkpoint error; ``id`` is the checkpoint's, when one
    is concerned."""

    def __init__(self, message: str, id: str | None = None) -> None:
        super().__init__(message)
        self.id = id


class CheckpointNotFound(CheckpointError):
    """No checkpoint has that id (or the namespace holds none)."""

    exit_code = EXIT_USAGE


class CheckpointCorrupted(CheckpointError):
    """A stored checkpoint (or the index) failed its integrity checks: its
    bytes are not the bytes that were saved, or its blob is missing."""


class CheckpointVersionError(CheckpointError):
    """A checkpoint was written in a format newer than this pipekit reads."""

    exit_code = EXIT_USAGE


class CheckpointDecryptError(CheckpointError):
    """An encrypted checkpoint cannot be decrypted with the key given (or no
    key was given)."""

    exit_code = EXIT_USAGE


class CheckpointConfigError(ConfigError, CheckpointError):
    """The manager's options are wrong: a bad value, a missing or invalid
    key, or encryption asked for without the ``crypto`` extra installed."""


class CheckpointStateError(CheckpointError, TypeError):
    """The state cannot be saved: it is not JSON-shaped (dict with str keys,
    list, str, int, float, bool, None), an attrs instance, or bytes."""
