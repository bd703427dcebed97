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
from ..errors import LeaseLost, NetworkRefused, NonRetryable, StageFailed, StageTimeout
from ..plugins._processors import RecordStage, StageContext
from ._records import Interrupted, TooManyFailures, run_record_stage

__all__ = ["run_in_process", "run_in_worker", "needs_worker"]


def needs_worker(st: Any) -> bool:
    return st.config.timeout is not None and not getattr(st.processor, "handles_timeout", False)


def run_in_process(
    st: Any, ctx: StageContext, *, record_run: Any = None, policy: Any = None
) -> dict[str, Any]:
    """Run the processor in this thread; under the network guard of
    ``policy`` (a :class:`pipekit.isolation._guard.Policy`) when one is given. The
    network mode the stage ran in goes to ``ctx.info["network"]``."""
    if policy is None:
        _run_processor(st, ctx, record_run)
        return ctx.info
    from ..isolation._namespaces import guarded

    with guarded(policy) as g, _judged(g, ctx):
        _run_processor(st, ctx, record_run)
    return ctx.info


@contextmanager
def _judged(g: Any, ctx: StageContext) -> Iterator[None]:
    """Around a processor's work under the guard ``g``: the network mode
    goes to ``ctx.info["network"]``, and a refusal the processor caught
    still fails the attempt."""
    try:
        yield
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
    """Run the attempt in ``python -m pipekit.engine._worker``. When ``timeout``
    passes, kill its whole process group; when the run is interrupted, ask
    it to stop (SIGTERM: a record stage checkpoints first), and kill it if it
    has not stopped within :data:`GRACE_S`; when ``lease`` (the stage's
    lock) is lost, kill it and raise :class:`pipekit.errors.LeaseLost`.

    The worker dies with this process however it ends (see
    :mod:`pipekit.engine._worker`): this process keeps the worker's stdin open until
    the worker has ended.

    ``records`` is what a record stage needs to checkpoint and dead-letter
    in the worker; ``progress(total, done, records)`` starts a progress
    handle that the worker's progress reports are forwarded to."""
    with tempfile.TemporaryDirectory(prefix="pipekit-worker-") as tmp:
        result_path = Path(tmp) / "result.json"
        progress_path = Path(tmp) / "progress"
        job = _job(st, ctx, pipeline_file, backend, result_path, policy)
        if records is not None:
            job["records"] = dict(records, progress=str(progress_path) if progress else None)
        proc = _start_worker(job)
        try:
            watch = _Watch(ctx, timeout, records is not None, lease)
            interrupted = watch.wait(proc, progress_path if progress else None, progress)
        finally:
            # Whatever way this ends, no process of the worker's group stays
            # (a child the stage left behind, or the worker itself when this
            # thread is leaving early).
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
        "run_id": ctx.run_id,
        "attempt": ctx.attempt,
        "result": str(result),
        "network": policy.to_json() if policy is not None else None,
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
    line on its stdin, which stays open: its end tells the worker that this
    process is gone. The pipe's write end is close-on-exec, so no other
    child of this process holds it."""
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


class _Watch:
    """The runner's side of a worker's life: its timeout, an interrupt of
    the run, the stage's lease, and its progress reports."""

    def __init__(self, ctx: StageContext, timeout: float | None, records: bool, lease: Any):
        self.ctx = ctx
        self.timeout = timeout
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.records = records
        self.lease = lease

    def wait(
        self, proc: subprocess.Popen[bytes], progress_path: Path | None, progress: Any
    ) -> bool:
        """Until the worker ends; True when it was asked to stop for an
        interrupt. Raises when it had to be killed."""
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
                if self.ctx.cancelled.is_set():
                    if not self.records:
                        _kill_group(proc)
                        raise Interrupted()
                    _stop_group(proc)  # a record stage checkpoints first
                    return True
                self._check(proc)
        finally:
            if bar is not None:
                bar.close()

    def _check(self, proc: subprocess.Popen[bytes]) -> None:
        if self.lease is not None and getattr(self.lease, "lost", False):
            _kill_group(proc)  # another runner may hold the stage now
            raise LeaseLost.of(self.lease)
        if self.deadline is not None and time.monotonic() >= self.deadline:
            _kill_group(proc)
            raise StageTimeout(
                f"attempt {self.ctx.attempt} ran past the stage's timeout of "
                f"{self.timeout:g}s and was stopped"
            )


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
    """SIGTERM the worker's process group, then SIGKILL it if it is still
    there after the grace period."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=GRACE_S)
    except subprocess.TimeoutExpired:
        _kill_group(proc)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the worker's process group (what is left of it: its id stays
    the group's while any member lives, even after the worker was reaped)
    and reap the worker."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
