"""The one life of a stage in a run, whatever runs its work: take its lock,
decide under it, then attempt it under its retry policy (make the context,
run the processor, check what it wrote) and hand a good attempt to the
committer. Called in a worker thread of the scheduler's pool, one stage at
a time per thread.

    run_stage(name)
      take_lock -> LockBusy when another runner holds it
      decide    -> skipped (up to date) | failed (cannot run)
      run_attempts
        attempt (xN, tenacity)      one try: context, execute, check
        -> failed(...)              after the last try
        -> to_committer(...)        Future: the commit's result
"""

from __future__ import annotations

import itertools
import logging
import os
import stat
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from .._atomic import RunTempFolders, unlink_quietly
from ..errors import (
    LeaseLost,
    NetworkRefused,
    NonRetryable,
    PipekitError,
    StageFailed,
    is_network_refusal,
    storage_error,
)
from ..isolation._guard import Policy
from ..isolation._namespaces import trusted
from ..plan._config import failure_limit
from ..plugins._processors import RecordStage, StageContext
from ..stores._protocols import IdemRecord, Lease
from ._commit import CommitJob, GroupCommitter
from ._decisions import processor_ref
from ._execute import needs_worker, run_in_process, run_in_worker
from ._records import Interrupted, RecordRun, partial_path_for, remove_stale_partials
from ._results import Decision, StageResult
from ._services import HOST, LockBusy, RunServices
from ._stage_checkpoints import StageCheckpoints

if TYPE_CHECKING:
    from ..plan._pipeline import PlannedStage

__all__ = ["Lifecycle"]

log = logging.getLogger("pipekit.runner")


@attrs.define
class _Attempted:
    """A good attempt: its temporary outputs, its facts, and the content
    hashes of outputs already known (a record stage hashes as it writes)."""

    temps: list[Path]
    info: dict[str, Any]
    known: dict[str, str]
    checkpointed: bool


class Lifecycle:
    def __init__(self, services: RunServices, committer: GroupCommitter) -> None:
        self.services = services
        self.committer = committer
        self.checkpoints = StageCheckpoints(services.pipeline.name, services.backends.checkpoints)
        self._policies: dict[str, Policy] = {}
        self.temp_folders = RunTempFolders()
        self._slots = threading.local()
        self._slot_count = itertools.count()

    def slot(self) -> int:
        """The job slot of the calling thread of the pool: 0 .. jobs-1,
        numbered as the pool makes its threads."""
        slot = getattr(self._slots, "number", None)
        if slot is None:
            slot = self._slots.number = next(self._slot_count)
        return slot

    def close(self) -> None:
        """After the last stage: what is queued committed, the run's temp
        folders removed."""
        self.committer.close()
        self.temp_folders.remove()

    # -- lock and decision ----------------------------------------------------

    def run_stage(self, name: str) -> StageResult | Future[StageResult] | LockBusy:
        """Worker thread: the stage's result, the future of its commit, or
        :class:`LockBusy`. A failure stops the run (without --keep-going)
        here, in the thread that saw it, so that no stage queued behind it
        starts."""
        outcome = self._run_stage(name)
        failed = isinstance(outcome, StageResult) and outcome.status == "failed"
        if failed and not self.services.options.keep_going:
            self.services.halt.set()
        return outcome

    def _run_stage(self, name: str) -> StageResult | Future[StageResult] | LockBusy:
        services = self.services
        if services.stopping():  # queued, then overtaken by a failure or an interrupt
            return services.not_run(name)
        stage = services.pipeline.stages[name]
        started = time.perf_counter()
        try:
            lease = self.take_lock(stage)
            if isinstance(lease, LockBusy):
                return lease
            services.started[name] = (time.time(), self.slot())
            handed_over = False
            try:
                outcome = self.decide_and_run(stage, lease, started)
                handed_over = isinstance(outcome, Future)  # the commit releases it
                return outcome
            finally:
                if not handed_over:
                    lease.release()
        except Interrupted as exc:
            return self.interrupted(name, started, exc)
        except Exception as exc:  # a bug or an I/O error fails the stage, not the run
            return self.unexpected(name, started, exc)

    def take_lock(self, stage: PlannedStage) -> Lease | LockBusy:
        """The stage's lease, taken; or :class:`LockBusy`."""
        options = self.services.options
        key = f"stage/{self.services.pipeline.name}/{stage.name}"
        lease = self.services.backends.locks.lock(key, options.lock_ttl)
        if lease.acquire(timeout=0):
            return lease
        state = getattr(lease, "holder_state", None)
        return LockBusy(lease.holder(), state() if state is not None else "unknown")

    def decide_and_run(
        self, stage: PlannedStage, lease: Lease, started: float
    ) -> StageResult | Future[StageResult]:
        """Under the lease: skip a stage another runner (or an earlier run)
        made up to date, else run it."""
        services = self.services
        decision = services.evaluator.decide(stage, forced=services.options.forced(stage.name))
        if not decision.run:
            return services.skipped(stage, decision, time.perf_counter() - started)
        if decision.fingerprint is None:  # e.g. an input is missing
            duration = time.perf_counter() - started
            return StageResult(
                stage.name,
                "failed",
                duration,
                decision.reason,
                error=decision.reason,
                reason_code=decision.code,
            )
        return self.run_attempts(stage, decision, lease, started)

    # -- attempts ---------------------------------------------------------------

    def run_attempts(
        self, stage: PlannedStage, decision: Decision, lease: Lease, started: float
    ) -> StageResult | Future[StageResult]:
        """Every attempt the stage's retry policy allows, until one is good."""
        services = self.services
        if services.on_start is not None:
            services.on_start(stage.name)
        services.observers.call("on_stage_start", run=services.info, stage=stage.config)
        services.inflight.note({path.parent for path in stage.output_paths})
        tries = 0
        last_info: dict[str, Any] = {}
        try:
            if stage.config.retry.attempts == 1:  # no retry loop: tenacity costs ~12 ms to import
                tries = 1
                attempted = self.attempt(stage, tries, decision, lease, last_info)
            else:
                for attempt in self._retrying(stage):
                    with attempt:
                        tries = attempt.retry_state.attempt_number
                        last_info = {}
                        attempted = self.attempt(stage, tries, decision, lease, last_info)
        except Interrupted as exc:
            if not exc.info and last_info:
                exc.info = dict(last_info)
            duration = time.perf_counter() - started
            entry = services.state_entry(
                stage, decision, {}, "failed", duration, tries, "interrupted"
            )
            services.state.update(stage.name, entry)  # the next run says it did not finish
            raise
        except Exception as exc:
            return self.attempts_failed(stage, decision, started, tries, exc, last_info)
        return self.to_committer(stage, decision, lease, started, tries, attempted)

    def _retrying(self, stage: PlannedStage) -> Any:
        """tenacity's loop over the stage's attempts (one attempt: one pass)."""
        import tenacity

        policy = stage.config.retry
        never_retried = (NonRetryable, Interrupted, LeaseLost, NetworkRefused)
        never_retried += tuple(stage.processor.non_retryable)

        def retryable(exc: BaseException) -> bool:
            return not isinstance(exc, never_retried) and not is_network_refusal(exc)

        def sleep(seconds: float) -> None:
            if self.services.cancel.wait(seconds):
                raise Interrupted()

        def before_sleep(state: Any) -> None:
            exc = state.outcome.exception()
            wait = state.next_action.sleep if state.next_action else 0.0
            log.warning(
                "stage %s: attempt %d failed (%s: %s); retrying in %.2fs",
                stage.name,
                state.attempt_number,
                type(exc).__name__,
                exc,
                wait,
            )

        return tenacity.Retrying(
            stop=tenacity.stop_after_attempt(policy.attempts),
            # min(max_backoff, backoff * 2**(n-1)) + U(0, jitter), as documented
            wait=tenacity.wait_exponential(multiplier=policy.backoff, max=policy.max_backoff)
            + tenacity.wait_random(0, policy.jitter),
            retry=tenacity.retry_if_exception(retryable),
            reraise=True,
            sleep=sleep,
            before_sleep=before_sleep,
        )

    def attempt(
        self,
        stage: PlannedStage,
        number: int,
        decision: Decision,
        lease: Lease,
        info: dict[str, Any],
    ) -> _Attempted:
        """One attempt: run the processor on a fresh context, then check
        that it wrote every output while the lease was held. ``info`` gets
        the attempt's facts, also when it fails."""
        is_record = isinstance(stage.processor, RecordStage)
        context = self.context(stage, number, decision, lease, is_record)
        record_run = self.record_run(stage, decision, lease) if is_record else None
        try:
            self.execute(stage, context, record_run, lease)
            check_attempt(stage, context.outputs, lease)
        except BaseException as exc:
            info.update(context.info)
            if not getattr(exc, "info", None):
                exc.info = dict(context.info)  # type: ignore[attr-defined]
            if not is_record:  # a record stage's partial output stays for its resume
                for temp in context.outputs:
                    unlink_quietly(temp)
            raise
        info.update(context.info)
        known = {}
        if record_run is not None and record_run.output_digest:
            known[stage.outputs[0]] = record_run.output_digest
        checkpoint = context.checkpoint
        checkpointed = is_record or checkpoint is None or checkpoint.used
        return _Attempted(list(context.outputs), dict(context.info), known, checkpointed)

    def execute(
        self,
        stage: PlannedStage,
        context: StageContext,
        record_run: RecordRun | None,
        lease: Lease,
    ) -> None:
        """Run the processor: in this thread, or in a worker process that
        can be killed at the stage's timeout."""
        policy = self.network_policy(stage)
        if not needs_worker(stage):
            run_in_process(stage, context, record_run=record_run, policy=policy)
            return
        self._run_in_worker(stage, context, record_run, policy, lease)

    def _run_in_worker(
        self,
        stage: PlannedStage,
        context: StageContext,
        record_run: RecordRun | None,
        policy: Policy,
        lease: Lease,
    ) -> None:
        records = None
        info = self.services.info
        if record_run is not None and info is not None:
            self.services.hashcache.save()  # a resumed run must not hash the inputs again
            records = {
                "pipeline": self.services.pipeline.name,
                "fingerprint": record_run.fingerprint,
                "namespace": record_run.checkpoint.namespace,
                "fence": record_run.checkpoint.fence,
                "run": attrs.asdict(info),
            }
        run_in_worker(
            stage,
            context,
            pipeline_file=self.services.pipeline.file,
            backend=self.services.backends.name,
            timeout=stage.config.timeout,
            records=records,
            progress=record_run.progress if record_run is not None else None,
            policy=policy,
            lease=lease,
        )

    def context(
        self, stage: PlannedStage, number: int, decision: Decision, lease: Lease, is_record: bool
    ) -> StageContext:
        """A fresh :class:`pipekit.StageContext` for attempt ``number``: its
        temporary outputs (output folders made), its checkpoint."""
        temps = []
        for key, final in zip(stage.outputs, stage.output_paths):
            if not os.path.isdir(final.parent):  # a stat, not a failing mkdir per stage
                final.parent.mkdir(parents=True, exist_ok=True)
            if is_record:
                partial = partial_path_for(final, decision.fingerprint or "")
                remove_stale_partials(final, partial)
                temps.append(partial)
                continue
            temp = self.temp_folders.path_for(final)
            if key.endswith("/"):  # a folder output: an empty folder to fill
                unlink_quietly(temp)  # (what an earlier attempt left)
                os.mkdir(temp)
            temps.append(temp)
        services = self.services
        return StageContext(
            stage_name=stage.name,
            run_id=services.run_id,
            inputs=decision.input_paths(stage.inputs, stage.input_paths),
            outputs=temps,
            params=stage.params,
            log=logging.getLogger(f"pipekit.stage.{stage.name}"),
            checkpoint=self.checkpoints.whole_stage(stage, decision, lease),
            final_outputs=list(stage.output_paths),
            attempt=number,
            workdir=services.pipeline.root,
            timeout=stage.config.timeout,
            cancelled=services.cancel,
        )

    def record_run(self, stage: PlannedStage, decision: Decision, lease: Lease) -> RecordRun:
        """What the record loop of a record stage needs."""
        services = self.services
        config = stage.config
        progress = None
        if services.progress is not None:
            display, name = services.progress, stage.name

            def progress(total: int, done: int, records: int) -> Any:
                return display.stage(name, total, done, records)

        return RecordRun(
            pipeline=services.pipeline.name,
            stage=stage.name,
            fingerprint=decision.fingerprint or "",
            input_keys=list(stage.inputs),
            checkpoint=self.checkpoints.records(stage, decision, lease),
            dead_letters=lambda: services.backends.dead_letters,
            every_records=config.checkpoint.every_records,
            every_seconds=config.checkpoint.every_seconds,
            retry=config.record_retry,
            max_failures=failure_limit(config.max_failures),
            on_failed=self._record_failed(stage) if services.observers.active else None,
            progress=progress,
            on_checkpoint=services.hashcache.save,
        )

    def _record_failed(self, stage: PlannedStage) -> Callable[[Any, BaseException], None]:
        def call(record: Any, error: BaseException) -> None:
            with trusted():  # observers are the runner's, not the processor's
                self.services.observers.call(
                    "on_record_failed",
                    run=self.services.info,
                    stage=stage.config,
                    record=record,
                    error=error,
                )

        return call

    def network_policy(self, stage: PlannedStage) -> Policy:
        """The network guard's policy for a stage (DESIGN §8): the
        pipeline's allow list plus the stage's, or everything when the
        stage or the command line allows the network."""
        policy = self._policies.get(stage.name)
        if policy is None:
            config = stage.config
            network = self.services.pipeline.network
            options = self.services.options
            allow_all = (
                config.allow_network
                or options.allow_network_all
                or stage.name in options.allow_network
            )
            policy = Policy(
                stage.name,
                processor_ref(stage).name,
                [*network.allow, *config.network.allow],
                allow_all=allow_all,
                isolation=config.network.isolation or network.isolation,
            )
            self._policies[stage.name] = policy
        return policy

    # -- ends ------------------------------------------------------------------

    def to_committer(
        self,
        stage: PlannedStage,
        decision: Decision,
        lease: Lease,
        started: float,
        tries: int,
        attempted: _Attempted,
    ) -> Future[StageResult]:
        """Hand a good attempt to the group committer: the future of the
        stage's result. The commit releases the lease."""
        services = self.services
        network = attempted.info.pop("network", None)

        def make_record(digests: dict[str, str]) -> IdemRecord:
            return IdemRecord(
                key=decision.key or "",
                status="SUCCESS",
                fingerprint=decision.fingerprint or "",
                result={
                    "outputs": digests,
                    "stage": stage.name,
                    "run_id": services.run_id,
                    "by": f"run {services.run_id} on {HOST}",
                },
                created=time.time(),
                token=getattr(lease, "token", None),
                fence=getattr(lease, "key", None),
            )

        def done(digests: dict[str, str] | None, error: BaseException | None) -> StageResult:
            duration = time.perf_counter() - started
            if error is not None or digests is None:
                message = f"commit failed: {type(error).__name__}: {error}"
                info = attempted.info
                result = self.failed(stage, decision, duration, tries, message, message, info)
                result.reason_code = "commit_failed"
                result.network = network
            else:
                result = self.committed(stage, decision, duration, tries, attempted, digests)
                result.network = network
            if result.status == "failed" and not services.options.keep_going:
                services.halt.set()
            services.observe_end(stage, result)
            return result

        job = CommitJob(
            list(stage.outputs),
            attempted.temps,
            list(stage.output_paths),
            lease,
            make_record,
            done,
            attempted.known,
        )
        return self.committer.submit(job)

    def committed(
        self,
        stage: PlannedStage,
        decision: Decision,
        duration: float,
        tries: int,
        attempted: _Attempted,
        digests: dict[str, str],
    ) -> StageResult:
        """A committed stage: its state entry, its checkpoints gone, its result."""
        services = self.services
        entry = services.state_entry(stage, decision, digests, "ok", duration, tries)
        services.state.update(stage.name, entry)
        if decision.manifests:
            services.evaluator.keep_manifests(decision)
        try:  # the work they resumed is committed
            self.checkpoints.clear(stage, decision, attempted.checkpointed)
        except Exception as exc:
            log.warning("stage %s: could not clear its checkpoint: %s", stage.name, exc)
        return StageResult(
            stage.name,
            "ok",
            duration,
            decision.reason,
            attempts=tries,
            key=decision.key,
            fingerprint=decision.fingerprint,
            info=attempted.info,
            reason_code=decision.code,
        )

    def attempts_failed(
        self,
        stage: PlannedStage,
        decision: Decision,
        started: float,
        tries: int,
        exc: BaseException,
        last_info: dict[str, Any],
    ) -> StageResult:
        """The result of a stage whose last attempt raised ``exc``."""
        duration = time.perf_counter() - started
        plain = isinstance(exc, (StageFailed, NetworkRefused))
        message = str(exc) if plain else f"{type(exc).__name__}: {exc}"
        info = dict(getattr(exc, "info", None) or last_info)
        network = info.pop("network", None)
        # where an error that is not one of pipekit's own words came from
        # (a bug in a processor), for the run record and `pipekit run -v`
        trace = getattr(exc, "remote_traceback", None)
        if not trace and not plain and not isinstance(exc, NonRetryable):
            trace = "".join(traceback.format_exception(exc))
        if trace:
            info["traceback"] = trace
        reason = f"failed after {tries} attempt(s): {message}"
        result = self.failed(stage, decision, duration, tries, reason, message, info)
        result.network = network
        self.services.observe_end(stage, result)
        return result

    def failed(
        self,
        stage: PlannedStage,
        decision: Decision,
        duration: float,
        tries: int,
        reason: str,
        error: str,
        info: dict[str, Any],
    ) -> StageResult:
        """A failed stage's result, and its state entry."""
        services = self.services
        entry = services.state_entry(stage, decision, {}, "failed", duration, tries, error)
        services.state.update(stage.name, entry)
        return StageResult(
            stage.name,
            "failed",
            duration,
            reason,
            attempts=tries,
            key=decision.key,
            fingerprint=decision.fingerprint,
            error=error,
            info=info,
            reason_code="failed",
        )

    def interrupted(self, name: str, started: float, exc: Interrupted) -> StageResult:
        info = dict(getattr(exc, "info", None) or {})
        reason = "interrupted"
        if "checkpoint_record" in info:
            fraction = info.get("checkpoint_fraction", 0.0)
            reason += (
                f"; checkpointed at record {info['checkpoint_record']:,} (input "
                f"{fraction:.0%} read): run again to resume"
            )
        duration = time.perf_counter() - started
        return StageResult(
            name,
            "failed",
            duration,
            reason,
            error="interrupted",
            info=info,
            reason_code="interrupted",
        )

    def unexpected(self, name: str, started: float, exc: Exception) -> StageResult:
        """A stage failed by an error outside its processor's work (a full
        or read-only disk is said in one line, without a traceback)."""
        exc = storage_error(exc) or exc
        if isinstance(exc, PipekitError):  # said in words (e.g. a backend is unreachable)
            log.debug("stage %s: %s", name, exc, exc_info=True)
        else:
            log.exception("stage %s: unexpected error", name)
        message = f"{type(exc).__name__}: {exc}"
        duration = time.perf_counter() - started
        return StageResult(name, "failed", duration, message, error=message, reason_code="error")


def check_attempt(stage: PlannedStage, temps: list[Path], lease: Lease) -> None:
    """After an attempt's work: raise unless it wrote every output, as a
    regular file, and its lease is still held."""
    for key, temp in zip(stage.outputs, temps):
        try:
            mode = os.lstat(temp).st_mode
        except FileNotFoundError:
            raise StageFailed(f"the processor did not write output {key!r}") from None
        if key.endswith("/"):
            if not stat.S_ISDIR(mode):
                raise StageFailed(f"output {key!r} is not a folder (a link or a file)")
        elif stat.S_ISDIR(mode):
            raise StageFailed(f"output {key!r} is a folder: write it as {key + '/'!r}")
        elif not stat.S_ISREG(mode):
            raise StageFailed(f"output {key!r} is not a regular file (a link or a folder)")
    if getattr(lease, "lost", False):
        raise LeaseLost.of(lease)
