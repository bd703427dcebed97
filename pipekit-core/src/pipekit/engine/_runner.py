"""The runner: one run of a pipeline, from its first observer call to its
run record.

    Runner.run()
      inflight.recover()        temp files a killed run left
      on_run_start
      Scheduler.run()           every stage: skipped, run and committed, or failed
      (run record started)      runs/<run_id>.jsonl: a header, then a line per ended stage
      outcome + run record      state saved, runs/<run_id>.json written (the .jsonl removed)
      on_run_end
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from ..errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_LOCK, EXIT_OK, ConfigError
from ..plugins._observers import Observers
from ..state._run_records import RunJournal, iso_utc
from ..stores._assemble import Backends, make_backends
from ._results import RunInfo, StageResult
from ._scheduler import Scheduler
from ._services import HOST, RunOptions, RunServices, new_run_id

if TYPE_CHECKING:
    from ..plan._pipeline import Pipeline

__all__ = ["Runner", "RunOutcome"]

log = logging.getLogger("pipekit.runner")

RECORD_COUNTERS = (
    "records_in",
    "records_out",
    "records_failed",
    "records_retried",
    "records_dead_lettered",
)


@attrs.define
class RunOutcome:
    run_id: str
    status: str  # ok | failed | interrupted
    results: list[StageResult]
    exit_code: int
    duration_s: float
    metrics: dict[str, Any]
    record_path: Path | None = None

    def summary(self, pipeline: str) -> dict[str, Any]:
        """The JSON that ``pipekit run --json`` prints (**contract** keys
        ``run_id``, ``status``, ``stages``; the rest is extra)."""
        return {
            "run_id": self.run_id,
            "status": self.status,
            "stages": [r.summary() for r in self.results],
            "pipeline": pipeline,
            "duration_s": round(self.duration_s, 6),
            "metrics": self.metrics,
        }


class Runner:
    def __init__(
        self,
        pipeline: Pipeline,
        registry: Any,
        options: RunOptions | None = None,
        *,
        backends: Backends | None = None,
        run_id: str | None = None,
        on_result: Callable[[StageResult], None] | None = None,
        progress: Any = None,
    ) -> None:
        options = options or RunOptions()
        backends = backends or make_backends(registry, pipeline)
        if registry is None and getattr(pipeline, "has_observers", True):
            registry = pipeline.registry.get()
        observers = Observers(registry.plugin_manager if registry is not None else None)
        self.pipeline = pipeline
        self.services = RunServices.build(
            pipeline, options, backends, run_id or new_run_id(), observers
        )
        self.services.on_result = on_result
        self.services.progress = progress
        self._header: dict[str, Any] | None = None
        self.scheduler: Scheduler | None = None

    @property
    def run_id(self) -> str:
        return self.services.run_id

    @property
    def options(self) -> RunOptions:
        return self.services.options

    @property
    def backends(self) -> Backends:
        return self.services.backends

    @property
    def cancel(self) -> Any:
        return self.services.cancel

    def run(self) -> RunOutcome:
        services = self.services
        pipeline = self.pipeline
        started_at = time.time()
        started = time.perf_counter()
        services.info = RunInfo(
            run_id=services.run_id,
            pipeline=pipeline.name,
            file=str(pipeline.file),
            stages=list(pipeline.order),
            backend=services.backends.name,
            jobs=services.options.jobs,
            started_at=started_at,
        )
        self.start_journal(started_at)
        for path in services.inflight.recover():
            log.info("removed %s, left behind by a killed run", path)
        services.observers.call("on_run_start", run=services.info)

        def make_lifecycle() -> Any:
            # Imported when the first stage must run: a run that skips every
            # stage never needs the attempt's machinery (the record loop, the
            # network guard, the committer: about 60 ms of imports).
            from ._commit import GroupCommitter
            from ._lifecycle import Lifecycle

            def busy() -> bool:
                """Stages still at work: a commit lingers a moment for theirs."""
                return bool(scheduler.working)

            committer = GroupCommitter(
                services.backends.idempotency, services.hashcache.remember, busy=busy
            )
            return Lifecycle(services, committer)

        scheduler = self.scheduler = Scheduler(services, make_lifecycle)
        try:
            results = scheduler.run()
        finally:
            if scheduler.lifecycle is not None:
                scheduler.lifecycle.close()
        interrupted = scheduler.interrupted or scheduler.signal_pending
        while True:
            # An interrupt while the run is being recorded marks it
            # interrupted and records it again (every write here is atomic).
            try:
                interrupted = interrupted or services.cancel.is_set()
                outcome = self.outcome(results, interrupted, scheduler.lock_timed_out, started)
                self.record(outcome, started_at)
                break
            except KeyboardInterrupt:
                services.cancel.set()
        try:
            services.observers.call(
                "on_run_end", run=services.info, summary=outcome.summary(pipeline.name)
            )
        except KeyboardInterrupt:
            pass  # the run is recorded; its outcome stands
        return outcome

    def signalled(self) -> bool:
        """SIGINT/SIGTERM, from the signal handler: True once the scheduler
        exists (it stops the run in order, and a signal after its loop marks
        the run interrupted); False before (the handler then raises
        KeyboardInterrupt)."""
        scheduler = self.scheduler
        if scheduler is None:
            return False
        scheduler.signalled()
        return True

    def outcome(
        self,
        results: dict[str, StageResult],
        interrupted: bool,
        lock_timed_out: list[str],
        started: float,
    ) -> RunOutcome:
        ordered = [results[name] for name in self.pipeline.order]
        if interrupted:
            status, exit_code = "interrupted", EXIT_INTERRUPTED
        elif any(r.status == "failed" for r in ordered):
            status, exit_code = "failed", EXIT_LOCK if lock_timed_out else EXIT_FAILED
        else:
            status, exit_code = "ok", EXIT_OK
        duration = time.perf_counter() - started
        metrics = self.metrics(ordered, duration)
        return RunOutcome(self.services.run_id, status, ordered, exit_code, duration, metrics)

    def metrics(self, results: list[StageResult], duration: float) -> dict[str, Any]:
        counts = {"ok": 0, "skipped": 0, "failed": 0}
        sums = dict.fromkeys(RECORD_COUNTERS, 0)
        resumed = 0
        for result in results:
            counts[result.status] = counts.get(result.status, 0) + 1
            for key in RECORD_COUNTERS:
                sums[key] += int(result.info.get(key) or 0)
            if result.info.get("resumed_from"):
                resumed += 1
        records_per_s = round(sums["records_in"] / duration, 1) if duration > 0 else 0.0
        return {
            "stages_ok": counts["ok"],
            "stages_skipped": counts["skipped"],
            "stages_failed": counts["failed"],
            **sums,
            "stages_resumed": resumed,
            "records_per_s": records_per_s,
            "hashed_files": self.services.hashcache.reads,
        }

    def header(self, started_at: float) -> dict[str, Any]:
        """What the run record says from the start: the run, and the
        pipeline's graph (each stage in order, with the stages it depends on)."""
        services = self.services
        pipeline = self.pipeline
        return {
            "run_id": services.run_id,
            "pipeline": pipeline.name,
            "file": str(pipeline.file),
            "host": HOST,
            "pid": os.getpid(),
            "backend": services.backends.name,
            "jobs": services.options.jobs,
            "started_at": iso_utc(started_at),
            "graph": [
                {"name": name, "deps": list(pipeline.stages[name].deps)} for name in pipeline.order
            ],
        }

    def start_journal(self, started_at: float) -> None:
        journal = RunJournal(self.pipeline.state_dir, self.services.run_id)
        self._header = self.header(started_at)
        try:
            journal.start(self._header)
        except FileExistsError:
            raise ConfigError(
                f"run id {self.services.run_id!r} is in use: {journal.path} exists"
            ) from None
        self.services.journal = journal

    def record(self, outcome: RunOutcome, started_at: float) -> None:
        """Save the state and hash cache; write the run record."""
        services = self.services
        pipeline = self.pipeline
        services.hashcache.save()
        services.state.save(pipeline.name)
        services.inflight.close()
        record = {
            **(self._header or self.header(started_at)),
            "ended_at": iso_utc(time.time()),
            "duration_s": round(outcome.duration_s, 6),
            "status": outcome.status,
            "exit_code": outcome.exit_code,
            "metrics": outcome.metrics,
            "plugin_errors": services.observers.errors,
            "network_allowed": [r.name for r in outcome.results if r.network == "allowed"],
            "stages": [r.record() for r in outcome.results],
        }
        journal = services.journal or RunJournal(pipeline.state_dir, services.run_id)
        outcome.record_path = journal.finish(record, started_at)
