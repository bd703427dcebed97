"""pipekit: batch pipelines that survive crashes, retries and reruns.

The public API is the names the ``TYPE_CHECKING`` block at the end of this
file imports: each is written there once, where type checkers see it.
``__all__`` and the attributes themselves are made from that block when
first asked for (the block is read with :mod:`ast`, as
``lazy_loader.attach_stub`` reads a stub), so that ``import pipekit`` stays
cheap on the path of a no-op run: importing every module of the public API
costs about 190 ms, ``import pipekit`` about 14 ms.
"""

# ruff: noqa: F401  (the TYPE_CHECKING block at the end re-exports the public API)

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_exports: dict[str, str] = {}


def _public() -> dict[str, str]:
    """Each public name and the module it lives in, from the block below."""
    if not _exports:
        import ast
        from pathlib import Path

        tree = ast.parse(Path(__file__).read_text(encoding="utf-8"))
        (block,) = (
            n for n in tree.body if isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n.test)
        )
        for node in block.body:
            if isinstance(node, ast.ImportFrom):
                for alias in node.names:
                    _exports[alias.asname or alias.name] = f"{__name__}.{node.module}"
    return _exports


def __getattr__(name: str) -> Any:
    if name == "__all__":
        value: Any = ["__version__", *_public()]
    elif name in _public():
        value = getattr(import_module(_public()[name]), name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(["__version__", *_public()])


if TYPE_CHECKING:  # pragma: no cover
    from ._api import run, status
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
    from .engine._plan_view import StageStatus
    from .engine._results import RunInfo, StageResult
    from .engine._runner import RunOutcome
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
    from .idempotency import IdempotencyManager, IdempotencyStatus, idempotent, make_key
    from .isolation._namespaces import IsolatedCommand, isolate_command
    from .plan._config import PipelineConfig, StageConfig
    from .plan._pipeline import Pipeline
    from .plugins._hookspecs import hookimpl, hookspec
    from .plugins._manager import load_registry
    from .plugins._processors import Checkpoint, RecordStage, Stage, StageContext, Started
    from .state._pipeline_state import PipelineState
