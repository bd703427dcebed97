"""pipekit: batch pipelines that survive crashes, retries and reruns.

The public API is what ``__all__`` lists; everything else lives in modules
whose names say what they hold. Attributes load lazily so that ``import
pipekit`` stays cheap on the path of a no-op run.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "hookimpl",
    "hookspec",
    "Stage",
    "RecordStage",
    "StageContext",
    "Started",
    "Checkpoint",
    "StageConfig",
    "PipelineConfig",
    "StageResult",
    "RunInfo",
    "PipekitError",
    "ConfigError",
    "PluginError",
    "LockTimeout",
    "StageFailed",
    "StageTimeout",
    "NonRetryable",
    "NetworkRefused",
    "isolate_command",
    "IsolatedCommand",
    "load_registry",
    "PipelineState",
    "StateError",
    "StateReadError",
    "StateValidationError",
    "StateLockError",
    "CheckpointManager",
    "CheckpointInfo",
    "CheckpointStats",
    "Retention",
    "CheckpointError",
    "CheckpointNotFound",
    "CheckpointCorrupted",
    "CheckpointVersionError",
    "CheckpointDecryptError",
    "CheckpointConfigError",
    "CheckpointStateError",
    "idempotent",
    "IdempotencyManager",
    "IdempotencyStatus",
    "make_key",
    "IdempotencyError",
    "IdempotencyInProgress",
    "IdempotencyConflict",
    "IdempotencyFailed",
    "IdempotencyClaimLost",
]

_LAZY = {
    "hookimpl": "pipekit.hookspecs",
    "hookspec": "pipekit.hookspecs",
    "Stage": "pipekit.stage",
    "RecordStage": "pipekit.stage",
    "StageContext": "pipekit.stage",
    "Started": "pipekit.stage",
    "Checkpoint": "pipekit.stage",
    "StageConfig": "pipekit.config",
    "PipelineConfig": "pipekit.config",
    "StageResult": "pipekit.results",
    "RunInfo": "pipekit.results",
    "PipekitError": "pipekit.errors",
    "ConfigError": "pipekit.errors",
    "PluginError": "pipekit.errors",
    "LockTimeout": "pipekit.errors",
    "StageFailed": "pipekit.errors",
    "StageTimeout": "pipekit.errors",
    "NonRetryable": "pipekit.errors",
    "NetworkRefused": "pipekit.errors",
    "isolate_command": "pipekit.netns",
    "IsolatedCommand": "pipekit.netns",
    "load_registry": "pipekit.plugins",
    "PipelineState": "pipekit.pipeline_state",
    "StateError": "pipekit.errors",
    "StateReadError": "pipekit.errors",
    "StateValidationError": "pipekit.errors",
    "StateLockError": "pipekit.errors",
    "CheckpointManager": "pipekit.checkpoints",
    "CheckpointInfo": "pipekit.checkpoints",
    "CheckpointStats": "pipekit.checkpoints",
    "Retention": "pipekit.checkpoints",
    "CheckpointError": "pipekit.checkpoints",
    "CheckpointNotFound": "pipekit.checkpoints",
    "CheckpointCorrupted": "pipekit.checkpoints",
    "CheckpointVersionError": "pipekit.checkpoints",
    "CheckpointDecryptError": "pipekit.checkpoints",
    "CheckpointConfigError": "pipekit.checkpoints",
    "CheckpointStateError": "pipekit.checkpoints",
    "idempotent": "pipekit.idempotency",
    "IdempotencyManager": "pipekit.idempotency",
    "IdempotencyStatus": "pipekit.idempotency",
    "make_key": "pipekit.idempotency",
    "IdempotencyError": "pipekit.errors",
    "IdempotencyInProgress": "pipekit.errors",
    "IdempotencyConflict": "pipekit.errors",
    "IdempotencyFailed": "pipekit.errors",
    "IdempotencyClaimLost": "pipekit.errors",
}


def __getattr__(name: str) -> Any:
    modname = _LAZY.get(name)
    if modname is None:
        raise AttributeError(f"module 'pipekit' has no attribute {name!r}")
    value = getattr(import_module(modname), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:  # pragma: no cover
    from .checkpoints import (
        CheckpointConfigError,
        CheckpointCorrupted,
        CheckpointDecryptError,
        CheckpointError,
        CheckpointInfo,
        CheckpointManager,
        CheckpointNotFound,
        CheckpointStateError,
        CheckpointStats,
        CheckpointVersionError,
        Retention,
    )
    from .config import PipelineConfig, StageConfig
    from .errors import (
        ConfigError,
        IdempotencyClaimLost,
        IdempotencyConflict,
        IdempotencyError,
        IdempotencyFailed,
        IdempotencyInProgress,
        LockTimeout,
        NetworkRefused,
        NonRetryable,
        PipekitError,
        PluginError,
        StageFailed,
        StageTimeout,
        StateError,
        StateLockError,
        StateReadError,
        StateValidationError,
    )
    from .hookspecs import hookimpl, hookspec
    from .idempotency import IdempotencyManager, IdempotencyStatus, idempotent, make_key
    from .netns import IsolatedCommand, isolate_command
    from .pipeline_state import PipelineState
    from .plugins import load_registry
    from .results import RunInfo, StageResult
    from .stage import Checkpoint, RecordStage, Stage, StageContext, Started
