"""Running one attempt of a stage: in this process, or in a worker process
that can be killed when the stage has a timeout the processor does not
enforce itself."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from . import _json
from .errors import NetworkRefused, NonRetryable, StageFailed, StageTimeout
from .records import Interrupted, run_record_stage
from .stage import RecordStage, StageContext

__all__ = ["run_in_process", "run_in_worker", "needs_worker"]


def needs_worker(st: Any) -> bool:
    return st.config.timeout is not None and not getattr(st.processor, "handles_timeout", False)


def run_in_process(
    st: Any, ctx: StageContext, *, on_record_failed: Any = None, policy: Any = None
) -> dict[str, Any]:
    """Run the processor in this thread; under the network guard of
    ``policy`` (a :class:`pipekit.netguard.Policy`) when one is given. The
    network mode the stage ran in goes to ``ctx.info["network"]``."""
    if policy is None:
        _run_processor(st, ctx, on_record_failed)
        return ctx.info
    from . import netguard

    with netguard.guarded(policy) as g:
        try:
            _run_processor(st, ctx, on_record_failed)
        except Exception as exc:
            ctx.info["network"] = g.mode
            if g.violations and not isinstance(exc, (Interrupted, NetworkRefused)):
                # the processor caught the refusal and failed otherwise
                raise NetworkRefused(g.violations[0]) from exc
            raise
        except BaseException:
            ctx.info["network"] = g.mode
            raise
    ctx.info["network"] = g.mode
    if g.violations:  # the processor caught the refusal and carried on
        raise NetworkRefused(g.violations[0])
    return ctx.info


def _run_processor(st: Any, ctx: StageContext, on_record_failed: Any) -> None:
    proc = st.processor
    if isinstance(proc, RecordStage):
        counters = run_record_stage(proc, ctx, cancel=ctx.cancelled, on_failed=on_record_failed)
        ctx.info.update(counters)
    else:
        proc.run(ctx)


def run_in_worker(
    st: Any,
    ctx: StageContext,
    *,
    pipeline_file: Path,
    backend: str,
    timeout: float | None,
    policy: Any = None,
) -> dict[str, Any]:
    """Run the attempt in ``python -m pipekit.worker``; kill its whole process
    group when ``timeout`` passes or the run is interrupted."""
    with tempfile.TemporaryDirectory(prefix="pipekit-worker-") as tmp:
        result_path = Path(tmp) / "result.json"
        job = {
            "file": str(pipeline_file),
            "backend": backend,
            "stage": st.name,
            "outputs": [str(p) for p in ctx.outputs],
            "run_id": ctx.run_id,
            "attempt": ctx.attempt,
            "result": str(result_path),
            "network": policy.to_json() if policy is not None else None,
        }
        cp = ctx.checkpoint
        if cp is not None:
            job["checkpoint"] = {
                "namespace": cp._namespace,
                "fingerprint": cp._fingerprint,
                "fence": cp._fence,
            }
        proc = subprocess.Popen(
            [sys.executable, "-m", "pipekit.worker"],
            stdin=subprocess.PIPE,
            start_new_session=True,
        )
        assert proc.stdin is not None
        proc.stdin.write(_json.dumps(job))
        proc.stdin.close()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                proc.wait(timeout=0.05)
                break
            except subprocess.TimeoutExpired:
                pass
            if ctx.cancelled.is_set():
                _kill_group(proc)
                raise Interrupted()
            if deadline is not None and time.monotonic() >= deadline:
                _kill_group(proc)
                raise StageTimeout(
                    f"attempt {ctx.attempt} ran past the stage's timeout of {timeout:g}s "
                    "and was stopped"
                )
        try:
            result = _json.loads(result_path.read_bytes())
        except (FileNotFoundError, ValueError):
            raise StageFailed(
                f"the worker process died (exit code {proc.returncode}) without a result"
            ) from None
    if result.get("network"):
        ctx.info["network"] = result["network"]
    if not result.get("ok"):
        exc: Exception
        if result.get("network_refused"):
            exc = NetworkRefused(str(result.get("message")))
        else:
            message = f"{result.get('error_type')}: {result.get('message')}"
            exc = (NonRetryable if result.get("non_retryable") else StageFailed)(message)
        exc.remote_traceback = result.get("traceback")  # type: ignore[union-attr]
        raise exc
    ctx.info.update(result.get("info") or {})
    return ctx.info


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
