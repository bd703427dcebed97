"""Every name of ``pipekit.__all__`` keeps working, and ``import pipekit``
stays lazy (it imports none of the public API's modules)."""

from __future__ import annotations

import inspect
import subprocess
import sys

import pipekit

PUBLIC = """
__version__ hookimpl hookspec Stage RecordStage StageContext Started Checkpoint StageConfig
PipelineConfig StageResult RunInfo PipekitError ConfigError PluginError LockTimeout StageFailed
StageTimeout NonRetryable NetworkRefused isolate_command IsolatedCommand load_registry
PipelineState StateError StateReadError StateValidationError StateLockError CheckpointManager
CheckpointInfo CheckpointStats Retention CheckpointError CheckpointNotFound CheckpointCorrupted
CheckpointVersionError CheckpointDecryptError CheckpointConfigError CheckpointStateError
idempotent IdempotencyManager IdempotencyStatus make_key IdempotencyError IdempotencyInProgress
IdempotencyConflict IdempotencyFailed IdempotencyClaimLost Pipeline run status RunOutcome StageStatus
""".split()


def test_every_public_name_is_listed_and_resolves() -> None:
    assert sorted(pipekit.__all__) == sorted(PUBLIC)
    assert sorted(dir(pipekit)) == sorted(PUBLIC)
    for name in PUBLIC:
        value = getattr(pipekit, name)
        assert value is not None, name
        if isinstance(value, type) or inspect.isfunction(value):
            module = sys.modules[value.__module__]
            assert getattr(module, value.__name__, value) is value, name


def test_a_missing_name_is_an_attribute_error() -> None:
    try:
        pipekit.NoSuchThing
    except AttributeError as exc:
        assert "NoSuchThing" in str(exc)
    else:
        raise AssertionError("pipekit.NoSuchThing resolved")


def test_star_import_and_lazy_import() -> None:
    code = (
        "import sys, pipekit\n"
        "eager = sorted(m for m in sys.modules if m.startswith('pipekit.'))\n"
        "ns = {}\n"
        "exec('from pipekit import *', ns)\n"
        "print(eager, 'Stage' in ns and 'IdempotencyClaimLost' in ns)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["[]", "True"]
