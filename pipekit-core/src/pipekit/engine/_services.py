"""What every part of one run shares: the plan, the options, the backends,
the state and the events that stop a run. The scheduler and the attempt
lifecycle read these; neither reaches into the other."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs

from ..plugins._observers import Observers
from ..state._hash_cache import HashCache
from ..state._inflight import InflightLog
from ..state._run_records import RunJournal
from ..state._runner_state import RunnerState, state_file_name
from ..stores._assemble import Backends
from ._decisions import Evaluator, params_digest, processor_ref
from ._results import HOST, Decision, RunInfo, StageResult

if TYPE_CHECKING:
    from ..plan._pipeline import Pipeline, PlannedStage

__all__ = ["RunOptions", "RunServices", "LockBusy", "new_run_id", "HOST"]


def new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + os.urandom(3).hex()


@attrs.frozen
class LockBusy:
    """Another runner holds the stage's lock: try again later.
    ``holder_state`` is the lock backend's word on that holder: ``alive``,
    ``gone`` or ``unknown``."""

    holder: str | None
    holder_state: str


@attrs.define
class RunOptions:
    jobs: int = 1
    force: frozenset[str] = frozenset()
    force_all: bool = False
    dry_run: bool = False
    keep_going: bool = False
    lock_timeout: float | None = 600.0
    """Seconds to wait for a stage's lock whose holder is not known to be
    alive (a holder that is alive and renewing its lease is waited for)."""
    lock_ttl: float = 60.0
    allow_network: frozenset[str] = frozenset()
    """Stages that may use the network whatever their config says."""
    allow_network_all: bool = False

    def forced(self, name: str) -> bool:
        return self.force_all or name in self.force


@attrs.define(eq=False)
class RunServices:
    """One run's shared parts. ``cancel`` is set when the run is
    interrupted (work in hand stops soon); ``halt`` when a failure stops
    the run (stages not yet started do not start)."""

    pipeline: Pipeline
    options: RunOptions
    backends: Backends
    run_id: str
    observers: Observers
    state: RunnerState
    hashcache: HashCache
    evaluator: Evaluator
    inflight: InflightLog
    progress: Any = None
    on_result: Callable[[StageResult], None] | None = None
    on_start: Callable[[str], None] | None = None
    """Called with a stage's name when it starts to execute (not when skipped)."""
    info: RunInfo | None = None
    journal: RunJournal | None = None
    """The run record as the run goes; the scheduler adds each result."""
    started: dict[str, tuple[float, int]] = attrs.field(factory=dict)
    """Stage name -> (Unix time its work started, its job slot)."""
    cancel: threading.Event = attrs.field(factory=threading.Event)
    halt: threading.Event = attrs.field(factory=threading.Event)

    @classmethod
    def build(
        cls,
        pipeline: Pipeline,
        options: RunOptions,
        backends: Backends,
        run_id: str,
        observers: Any,
    ) -> RunServices:
        state = RunnerState(pipeline.state_dir, state_file_name(pipeline.file))
        hashcache = HashCache(pipeline.state_dir / "hashcache.json")
        evaluator = Evaluator(pipeline, hashcache, backends.idempotency, state)
        inflight = InflightLog(pipeline.state_dir)
        return cls(
            pipeline, options, backends, run_id, observers, state, hashcache, evaluator, inflight
        )

    def stopping(self) -> bool:
        return self.halt.is_set() or self.cancel.is_set()

    def observe_end(self, stage: PlannedStage, result: StageResult) -> None:
        if self.observers.active:
            self.observers.call("on_stage_end", run=self.info, stage=stage.config, result=result)

    def not_run(self, name: str) -> StageResult:
        interrupted = self.cancel.is_set()
        if interrupted:
            return StageResult(
                name,
                "skipped",
                reason="not run: the run was interrupted",
                reason_code="run_interrupted",
            )
        return StageResult(name, "skipped", reason="not run", reason_code="not_run")

    def state_entry(
        self,
        stage: PlannedStage,
        decision: Decision,
        outputs: dict[str, str],
        status: str,
        duration: float,
        attempts: int,
        error: str | None = None,
    ) -> dict[str, Any]:
        """The stage's entry in the runner's state file."""
        processor = processor_ref(stage)
        return {
            "fingerprint": decision.fingerprint,
            "key": decision.key,
            "processor": processor.name,
            "version": processor.version,
            "code": stage.code,
            "values": stage.values,
            "params_sha": params_digest(stage.params_canonical),
            "inputs": decision.inputs,
            "outputs": outputs,
            "status": status,
            "run_id": self.run_id,
            "finished_at": time.time(),
            "duration_s": round(duration, 6),
            "attempts": attempts,
            "error": error,
            "store_gen": self.evaluator.store_generation(),
        }

    def skipped(self, stage: PlannedStage, decision: Decision, duration: float) -> StageResult:
        """The result of a stage found up to date; its state entry brought
        up to date with what the decision read."""
        entry = self.state.get(stage.name)
        if entry is None or entry.get("fingerprint") != decision.fingerprint:
            outputs = decision.outputs
            self.state.update(stage.name, self.state_entry(stage, decision, outputs, "ok", 0.0, 0))
            if decision.manifests:
                self.evaluator.keep_manifests(decision)
        elif entry.get("store_gen") != (generation := self.evaluator.store_generation()):
            self.state.update(stage.name, {**entry, "store_gen": generation})
        result = StageResult(
            stage.name,
            "skipped",
            duration,
            decision.reason,
            key=decision.key,
            reason_code=decision.code,
            fingerprint=decision.fingerprint,
        )
        self.observe_end(stage, result)
        return result
