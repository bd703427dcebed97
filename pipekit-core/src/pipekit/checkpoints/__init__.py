"""Checkpoints: ``CheckpointManager`` layers serialization, incremental
deltas, zstd compression, optional AES-GCM encryption, SHA-256 integrity,
format versioning, an index and retention over any checkpoint byte store.
See docs/checkpoints.md."""

from __future__ import annotations

from .errors import (
    CheckpointConfigError,
    CheckpointCorrupted,
    CheckpointDecryptError,
    CheckpointError,
    CheckpointNotFound,
    CheckpointStateError,
    CheckpointVersionError,
)
from .format import FORMAT_VERSION
from .index import CheckpointInfo
from .manager import CheckpointManager
from .reports import CheckpointStats, Loaded, PruneResult, VerifyItem, VerifyReport
from .retention import Retention

__all__ = [
    "CheckpointManager",
    "CheckpointInfo",
    "CheckpointStats",
    "Loaded",
    "PruneResult",
    "VerifyItem",
    "VerifyReport",
    "Retention",
    "FORMAT_VERSION",
    "CheckpointError",
    "CheckpointNotFound",
    "CheckpointCorrupted",
    "CheckpointVersionError",
    "CheckpointDecryptError",
    "CheckpointConfigError",
    "CheckpointStateError",
]
