"""``python -m pipekit.engine._worker``: run one attempt of one stage in a
process the runner can kill at the stage's timeout. Reads a JSON job on
stdin, writes a JSON result file. A record stage checkpoints, dead-letters,
calls ``on_record_failed`` observers and reports progress here, and on
SIGTERM stops after the record in hand with a checkpoint.

The worker dies with its runner, however the runner ends (even ``kill -9``):
only the runner holds the write end of the worker's stdin, so the end of
that pipe means the runner is gone, and a thread then kills the worker's
whole process group, so that no orphan writes the stage's output,
checkpoints or dead letters while another run works on the stage."""

from __future__ import annotations

import functools
import logging
import os
import signal
import sys
import threading
import traceback
from pathlib import Path
from typing import Any


def _record_run(job: dict[str, Any], st: Any, registry: Any, backends: Any) -> Any:
    from ..plan._config import failure_limit
    from ..plugins._observers import Observers
    from ._record_checkpoint import RecordCheckpoint
    from ._records import RecordRun
    from ._results import RunInfo

    rj = job["records"]
    fence = tuple(rj["fence"]) if rj.get("fence") else None
    observers = Observers(registry.plugin_manager)
    info = RunInfo(**rj["run"])

    def on_failed(record: Any, error: BaseException) -> None:
        observers.call("on_record_failed", run=info, stage=st.config, record=record, error=error)

    progress = functools.partial(_ProgressFile, rj["progress"]) if rj.get("progress") else None
    cfg = st.config
    return RecordRun(
        pipeline=rj["pipeline"],
        stage=st.name,
        fingerprint=rj["fingerprint"],
        input_keys=list(st.inputs),
        checkpoint=RecordCheckpoint(
            backends.checkpoints,
            rj["namespace"],
            rj["fingerprint"],
            fence=fence,  # type: ignore[arg-type]
            label=f"stage {st.name}",
        ),
        dead_letters=lambda: backends.dead_letters,
        every_records=cfg.checkpoint.every_records,
        every_seconds=cfg.checkpoint.every_seconds,
        retry=cfg.record_retry,
        max_failures=failure_limit(cfg.max_failures),
        on_failed=on_failed if observers.active else None,
        progress=progress,
    )


class _ProgressFile:
    """Progress reports for the runner: ``total done records`` at offset 0."""

    def __init__(self, path: str, total: int, done: int, records: int) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
        self.total = total
        self.update(records, done)

    def update(self, records: int, done: int) -> None:
        os.pwrite(self.fd, f"{self.total} {done} {records}\n".ljust(64).encode(), 0)

    def close(self) -> None:
        os.close(self.fd)


def read_job() -> bytes:
    """The job: one line of JSON on stdin. Then stdin becomes ``/dev/null``
    (what the stage's own child processes inherit) and a thread watches the
    pipe for the runner's end (:func:`_die_with_runner`)."""
    job = sys.stdin.buffer.readline()
    watched = os.dup(0)  # not inherited by the stage's child processes
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    threading.Thread(
        target=_die_with_runner, args=(watched,), name="pipekit-runner-watch", daemon=True
    ).start()
    return job


def _die_with_runner(fd: int) -> None:
    """At the end of the runner's pipe (the runner is gone), SIGKILL this
    process group."""
    try:
        while os.read(fd, 4096):
            pass
    except OSError:
        pass
    if os.getpgrp() == os.getpid():  # the leader of its own group, as the runner starts it
        os.killpg(os.getpgrp(), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)


def _context(job: dict[str, Any], st: Any, pipeline: Any, backends: Any) -> Any:
    """The attempt's :class:`StageContext`, with the stage's checkpoint."""
    from ..plugins._processors import Checkpoint, StageContext

    checkpoint = None
    if job.get("checkpoint"):
        cp = job["checkpoint"]
        fence = tuple(cp["fence"]) if cp.get("fence") else None
        checkpoint = Checkpoint(
            backends.checkpoints,
            cp["namespace"],
            cp["fingerprint"],
            fence=fence,  # type: ignore[arg-type]
        )
    return StageContext(
        stage_name=st.name,
        run_id=job["run_id"],
        inputs=[Path(p) for p in job["inputs"]],
        outputs=[Path(p) for p in job["outputs"]],
        params=st.params,
        log=logging.getLogger(f"pipekit.stage.{st.name}"),
        final_outputs=list(st.output_paths),
        attempt=job["attempt"],
        workdir=pipeline.root,
        checkpoint=checkpoint,
    )


def main() -> int:
    from .. import _json
    from ..errors import NetworkRefused, NonRetryable
    from ..plan._pipeline import load_pipeline
    from ..plugins._manager import load_registry
    from ._execute import run_in_process
    from ._records import Interrupted

    job = _json.loads(read_job())
    sys.stdout = sys.stderr  # a processor's prints must not reach the protocol
    if job.get("log"):
        from .._log_lines import configure

        configure(*job["log"])
    ctx: Any = None
    out: dict[str, Any] = {"ok": False}
    try:
        registry = load_registry()
        pipeline = load_pipeline(
            Path(job["file"]), registry, backend_override=job["backend"], check_inputs=False
        )
        st = pipeline.stages[job["stage"]]
        backends: Any = None
        if job.get("checkpoint") or job.get("records"):
            from ..stores._assemble import make_backends

            backends = make_backends(registry, pipeline)
        ctx = _context(job, st, pipeline, backends)
        signal.signal(signal.SIGTERM, lambda _s, _f: ctx.cancelled.set())
        record_run = _record_run(job, st, registry, backends) if job.get("records") else None
        policy = None
        if job.get("network"):
            from ..isolation._guard import Policy

            policy = Policy.from_json(job["network"])
        out["info"] = run_in_process(st, ctx, record_run=record_run, policy=policy)
        out["ok"] = True
    except Interrupted as exc:
        out.update(interrupted=True, interrupt_info=exc.info)
    except BaseException as exc:  # reported to the parent, which decides
        non_retryable = isinstance(exc, NonRetryable)
        try:
            non_retryable = non_retryable or isinstance(exc, st.processor.non_retryable)
        except Exception:
            pass
        out.update(
            error_type=type(exc).__name__,
            message=str(exc),
            traceback=traceback.format_exc(),
            non_retryable=non_retryable,
            network_refused=isinstance(exc, NetworkRefused),
        )
    out["network"] = ctx.info.pop("network", None) if ctx is not None else None
    out.setdefault("info", dict(ctx.info) if ctx is not None else {})
    Path(job["result"]).write_bytes(_json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
