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
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .. import _json
from .._log_lines import mirror
from ..errors import LeaseLost, NetworkRefused, NonRetryable, StageFailed, StageTimeout
from ..plugins._processors import RecordStage, StageContext
from ._records import Interrupted, TooManyFailures, run_record_stage

__all__ = ["run_in_process", "run_in_worker", "needs_worker"]


def needs_worker(st: Any) -> bool:
    return st.config.timeout is not None and not getattr(st.processor, "handles_timeout", False)


def run_in_process(
    st: Any, ctx: StageContext, *, record_run: Any = None, policy: Any = None
) -> dict[str, Any]:
    """Run the processor in this thread, under the network guard of
    ``policy`` when one is given (its mode goes to ``ctx.info["network"]``)."""
    if policy is None:
        _run_processor(st, ctx, record_run)
        return ctx.info
    from ..isolation._namespaces import guarded

    with guarded(policy) as g, _judged(g, ctx):
        _run_processor(st, ctx, record_run)
    return ctx.info


@contextmanager
def _judged(g: Any, ctx: StageContext) -> Iterator[None]:
    """Around a processor's work under the guard ``g``: the network mode goes
    to ``ctx.info["network"]``; a refusal the processor caught still fails."""
    try:
        yield
    except Exception as exc:
        if g.violations and not isinstance(exc, (Interrupted, NetworkRefused)):
            # the processor caught the refusal and failed otherwise
            raise NetworkRefused(g.violations[0]) from exc
        raise
    finally:
        ctx.info["network"] = g.mode
    if g.violations:  # the processor caught the refusal and carried on
        raise NetworkRefused(g.violations[0])


def _run_processor(st: Any, ctx: StageContext, record_run: Any) -> None:
    """The processor's work, one way for each kind: the record loop, or a
    whole stage's ``start`` (waited for here, killed at the timeout or
    when the run is cancelled) or, where it starts nothing, ``run``."""
    proc = st.processor
    if isinstance(proc, RecordStage):
        run_record_stage(proc, ctx, record_run)
        return
    started = proc.start(ctx)
    if started is None:
        proc.run(ctx)
        return
    deadline = None if ctx.timeout is None else time.monotonic() + ctx.timeout
    started.wait(deadline, ctx.cancelled)


GRACE_S = 5.0
"""How long an interrupted worker may take to checkpoint and exit before it is killed."""


def run_in_worker(
    st: Any,
    ctx: StageContext,
    *,
    pipeline_file: Path,
    backend: str,
    timeout: float | None,
    records: dict[str, Any] | None = None,
    progress: Any = None,
    policy: Any = None,
    lease: Any = None,
) -> dict[str, Any]:
    """Run the attempt in ``python -m pipekit.engine._worker``, whose process
    group is killed when ``timeout`` passes or ``lease`` is lost (then
    :class:`pipekit.errors.LeaseLost`); an interrupt asks it to stop (SIGTERM:
    a record stage checkpoints first) and kills it after :data:`GRACE_S`.
    The worker's stdin stays open until it has ended: it dies with this
    process. ``records`` is what a record stage needs in the worker;
    ``progress(total, done, records)`` starts the progress handle."""
    with tempfile.TemporaryDirectory(prefix="pipekit-worker-") as tmp:
        result_path = Path(tmp) / "result.json"
        progress_path = Path(tmp) / "progress"
        job = _job(st, ctx, pipeline_file, backend, result_path, policy)
        if records is not None:
            job["records"] = dict(records, progress=str(progress_path) if progress else None)
        proc = _start_worker(job)
        try:
            watched = progress_path if progress else None
            interrupted = _watch(proc, ctx, timeout, lease, records is not None, watched, progress)
        finally:  # no process of the worker's group stays, whatever way this ends
            _kill_group(proc)
            assert proc.stdin is not None
            try:
                proc.stdin.close()
            except BrokenPipeError:  # the job it never read
                pass
        try:
            result = _json.loads(result_path.read_bytes())
        except (FileNotFoundError, ValueError):
            if interrupted:
                raise Interrupted() from None
            raise StageFailed(
                f"the worker process died (exit code {proc.returncode}) without a result"
            ) from None
    _raise_for_result(ctx, result)
    if interrupted:
        raise Interrupted()
    return ctx.info


def _job(
    st: Any, ctx: StageContext, pipeline_file: Path, backend: str, result: Path, policy: Any
) -> dict[str, Any]:
    """What the worker is to do (records aside)."""
    job: dict[str, Any] = {
        "file": str(pipeline_file),
        "backend": backend,
        "stage": st.name,
        "outputs": [str(p) for p in ctx.outputs],
        "inputs": [str(p) for p in ctx.inputs],
        "run_id": ctx.run_id,
        "attempt": ctx.attempt,
        "result": str(result),
        "network": policy.to_json() if policy is not None else None,
        "log": mirror(),  # the worker logs as this process does
    }
    cp = ctx.checkpoint
    if cp is not None:
        job["checkpoint"] = {
            "namespace": cp._namespace,
            "fingerprint": cp._fingerprint,
            "fence": cp._fence,
        }
    return job


def _start_worker(job: dict[str, Any]) -> subprocess.Popen[bytes]:
    """Start the worker in a session of its own and send it ``job`` as one
    line on its stdin, which stays open: its end (close-on-exec, held by this
    process alone) tells the worker that this process is gone."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipekit.engine._worker"],
        stdin=subprocess.PIPE,
        start_new_session=True,
    )
    assert proc.stdin is not None
    try:
        proc.stdin.write(_json.dumps(job) + b"\n")
        proc.stdin.flush()
    except BrokenPipeError:  # it died at once: no result says so
        pass
    return proc


def _watch(
    proc: subprocess.Popen[bytes],
    ctx: StageContext,
    timeout: float | None,
    lease: Any,
    records: bool,
    progress_path: Path | None,
    progress: Any,
) -> bool:
    """Wait for the worker to end, forwarding its progress reports; True when
    it was asked to stop for an interrupt. Kills it (and raises) when it runs
    past ``timeout`` or the stage's lease is lost."""
    deadline = None if timeout is None else time.monotonic() + timeout
    bar = None
    try:
        while True:
            try:
                proc.wait(timeout=0.05)
                return False
            except subprocess.TimeoutExpired:
                pass
            if progress_path is not None:
                bar = _forward_progress(progress_path, progress, bar)
            if ctx.cancelled.is_set():
                if not records:
                    _kill_group(proc)
                    raise Interrupted()
                _stop_group(proc)  # a record stage checkpoints first
                return True
            if lease is not None and getattr(lease, "lost", False):
                _kill_group(proc)  # another runner may hold the stage now
                raise LeaseLost.of(lease)
            if deadline is not None and time.monotonic() >= deadline:
                _kill_group(proc)
                raise StageTimeout(
                    f"attempt {ctx.attempt} ran past the stage's timeout of "
                    f"{timeout:g}s and was stopped"
                )
    finally:
        if bar is not None:
            bar.close()


def _raise_for_result(ctx: StageContext, result: dict[str, Any]) -> None:
    """Take the worker's result into ``ctx.info``; raise what it failed with."""
    ctx.info.update(result.get("info") or {})
    if result.get("network"):
        ctx.info["network"] = result["network"]
    if result.get("interrupted"):
        raise Interrupted("interrupted", result.get("interrupt_info") or {})
    if result.get("ok"):
        return
    etype = result.get("error_type")
    message = f"{etype}: {result.get('message')}"
    exc_cls: type[Exception] = NonRetryable if result.get("non_retryable") else StageFailed
    if etype == TooManyFailures.__name__:
        exc_cls, message = TooManyFailures, str(result.get("message"))
    elif result.get("network_refused"):
        exc_cls, message = NetworkRefused, str(result.get("message"))
    exc = exc_cls(message)
    exc.remote_traceback = result.get("traceback")  # type: ignore[attr-defined]
    exc.info = dict(ctx.info)  # type: ignore[attr-defined]
    raise exc


def _forward_progress(path: Path, progress: Any, bar: Any) -> Any:
    """Read the worker's last progress report (``total done records``) and
    pass it on; return the progress handle (started on the first report)."""
    try:
        with open(path, "rb") as f:
            parts = f.read(128).split()
        total, done, records = (int(x) for x in parts[:3])
    except (OSError, ValueError):
        return bar
    if bar is None:
        bar = progress(total, done, records)
    bar.update(records, done)
    return bar


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the worker's process group; SIGKILL it after the grace period."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=GRACE_S)
    except subprocess.TimeoutExpired:
        _kill_group(proc)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL what is left of the worker's process group (its id stays the
    group's while any member lives) and reap the worker."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
