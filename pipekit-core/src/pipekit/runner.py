"""The runner: schedules stages in DAG order, skips what is up to date, runs
the rest under their lock, retry policy and timeout, and commits each one
crash-safely (outputs durable and in place before the idempotency record)."""

from __future__ import annotations

import functools
import heapq
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from .atomic import temp_path_for, unlink_quietly
from .backends.protocols import IdemRecord
from .errors import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_LOCK,
    EXIT_OK,
    LeaseLost,
    NetworkRefused,
    NonRetryable,
    PipekitError,
    StageFailed,
)
from .fingerprint import Evaluator, params_digest, processor_ref
from .hashcache import HashCache
from .results import Decision, RunInfo, StageResult

if TYPE_CHECKING:  # pragma: no cover
    from concurrent.futures import ThreadPoolExecutor

__all__ = [
    "RunOptions",
    "Backends",
    "Runner",
    "RunOutcome",
    "make_backends",
    "build_backends",
    "new_run_id",
]

RECORD_COUNTERS = (
    "records_in",
    "records_out",
    "records_failed",
    "records_retried",
    "records_dead_lettered",
)

log = logging.getLogger("pipekit.runner")
HOST = os.uname().nodename


COMMITS_IN_FLIGHT = 32
"""How many finished stages may wait for their commit while the scheduler
keeps the workers fed (a commit batch lingers a few milliseconds)."""


def new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + os.urandom(3).hex()


@attrs.define
class RunOptions:
    jobs: int = 1
    force: frozenset[str] = frozenset()
    force_all: bool = False
    dry_run: bool = False
    keep_going: bool = False
    lock_timeout: float | None = 600.0
    lock_ttl: float = 60.0
    allow_network: frozenset[str] = frozenset()
    """Stages that may use the network whatever their config says."""
    allow_network_all: bool = False


@attrs.define
class Backends:
    name: str
    locks: Any
    idempotency: Any
    checkpoints: Any
    dead_letter_factory: Callable[[], Any] | None = None
    _dead_letters: Any = attrs.field(default=None, init=False)
    _dl_lock: threading.Lock = attrs.field(factory=threading.Lock, init=False)

    @property
    def dead_letters(self) -> Any:
        """The dead-letter store, built on first use (a run that dead-letters
        nothing never opens it)."""
        with self._dl_lock:
            if self._dead_letters is None:
                if self.dead_letter_factory is None:
                    raise RuntimeError("these backends have no dead-letter store")
                self._dead_letters = self.dead_letter_factory()
            return self._dead_letters


def make_backends(registry: Any, pipeline: Any, *, connect: bool = True) -> Backends:
    """Build the pipeline's backends. ``registry`` may be None for a cached
    plan: core's own ``file`` backend then needs no plugin loaded.

    The dead-letter store is the one registered under the backend's name;
    a backend that registers none keeps dead letters in the ``file`` store."""

    name = pipeline.backend.name
    if registry is None and name != "file":
        registry = pipeline.registry.get()
    return build_backends(
        registry, name, dict(pipeline.backend.options), pipeline.state_dir, connect=connect
    )


def build_backends(
    registry: Any, name: str, options: dict[str, Any], state_dir: Path, *, connect: bool = True
) -> Backends:
    """Call the three factories of backend ``name``. With ``connect``, each
    object that has a ``connect()`` method is asked to reach its service
    now, so that an unreachable one is reported before anything runs
    (``BackendUnavailable``, exit code 2) rather than as failed stages."""
    from .backends import file_factories as _file

    dead_letters: Any = None
    if registry is None and name == "file":
        factories = [_file.lock_backend, _file.idempotency_store, _file.checkpoint_store]
        dead_letters = _file.dead_letter_store
    else:
        kinds = ("lock_backends", "idempotency_stores", "checkpoint_stores")
        factories = [registry.get(kind, name) for kind in kinds]
        reg = registry.dead_letter_stores.get(name)
        dead_letters = reg.obj if reg is not None else None
    if dead_letters is None:
        dl_options: dict[str, Any] = {}
        dl_factory = _file.dead_letter_store
    else:
        dl_options, dl_factory = options, dead_letters
    locks, idempotency, checkpoints = (f(dict(options), state_dir=state_dir) for f in factories)
    backends = Backends(
        name,
        locks,
        idempotency,
        checkpoints,
        dead_letter_factory=lambda: dl_factory(dict(dl_options), state_dir=state_dir),
    )
    if connect:
        for obj in (backends.locks, backends.idempotency, backends.checkpoints):
            hook = getattr(obj, "connect", None)
            if hook is not None:
                hook()
    return backends


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


SLOW_COMMIT_S = 0.00015
"""A commit per stage slower than this goes to the committer thread (see
``Runner._schedule``): on a tmpfs one costs about 0.08 ms, on an ext4 disk
0.25-0.3 ms, and a batch of them (8 or so) then keeps the scheduling thread
from reaping and queueing commands for 2-3 ms, longer than the commands
queued on the starters last (measured: 1,000 shell stages, 1.04-1.09 s with
the disk's commits in the scheduling thread, 0.91-0.95 s in the committer
thread; on a tmpfs equal either way)."""

PREPARED_HOLD_S = 0.05
"""How long a started stage prepared while every slot is busy (locked and
decided) may wait for a slot before it lets go of its lock: several short
commands' time. Waiting longer means long commands, where preparing saves
nothing and another runner with a free slot may take the stage."""


class _Deferred:
    """A stage whose lock another runner holds: try again later."""

    def __init__(self, holder: str | None) -> None:
        self.holder = holder


class Runner:
    def __init__(
        self,
        pipeline: Any,
        registry: Any,
        options: RunOptions | None = None,
        *,
        backends: Backends | None = None,
        run_id: str | None = None,
        on_result: Callable[[StageResult], None] | None = None,
        progress: Any = None,
    ) -> None:
        from .observers import Observers
        from .state import RunnerState

        self.pipeline = pipeline
        self.registry = registry
        self.options = options or RunOptions()
        self.backends = backends or make_backends(registry, pipeline)
        self.run_id = run_id or new_run_id()
        self.state = RunnerState(pipeline.state_dir)
        self.hashcache = HashCache(pipeline.state_dir / "hashcache.json")
        self.evaluator = Evaluator(pipeline, self.hashcache, self.backends.idempotency, self.state)
        if registry is not None:
            self.observers = Observers(registry.plugin_manager)
        elif getattr(pipeline, "has_observers", True):
            self.observers = Observers(pipeline.registry.get().plugin_manager)
        else:
            self.observers = Observers(None)  # no plugin observes: none is loaded
        self.cancel = threading.Event()
        self.on_result = on_result
        self.progress = progress
        """A :class:`pipekit.progress.ProgressDisplay` (bars on a terminal), or None."""
        from .inflight import InflightLog

        self.inflight = InflightLog(pipeline.state_dir)
        from .commit import GroupCommitter

        self._working = 0  # stages at work or queued in the pool (not committing)
        self._working_lock = threading.Lock()
        self._handed = threading.local()  # whether this worker's stage went to the committer
        self.committer = GroupCommitter(
            self.backends.idempotency, self.hashcache.remember, busy=lambda: self._working > 0
        )
        self._halt = threading.Event()  # a failure stops the run: queued stages do not start
        self._lock_timed_out: list[str] = []
        self._tries: dict[str, int] = {}
        self._results_so_far: dict[str, StageResult] = {}
        self._policies: dict[str, Any] = {}
        self._pool: ThreadPoolExecutor | None = None
        from .started import StartedStages

        self.started = StartedStages(self)

    # -- public ---------------------------------------------------------------

    def forced(self, name: str) -> bool:
        return self.options.force_all or name in self.options.force

    def run(self) -> RunOutcome:
        started = time.time()
        t0 = time.perf_counter()
        pl = self.pipeline
        info = RunInfo(
            run_id=self.run_id,
            pipeline=pl.name,
            file=str(pl.file),
            stages=list(pl.order),
            backend=self.backends.name,
            jobs=self.options.jobs,
            started_at=started,
        )
        self.info = info
        for path in self.inflight.recover():
            log.info("removed %s, left behind by a killed run", path)
        self.observers.call("on_run_start", run=info)
        interrupted = False
        try:
            results = self._schedule()
        except KeyboardInterrupt:
            interrupted = True
            results = self._results_so_far
        while True:
            # An interrupt while the run is being recorded marks it interrupted
            # and records it again (every write here is atomic).
            try:
                outcome = self._outcome(results, interrupted, time.perf_counter() - t0)
                self._finish(outcome, started)
                break
            except KeyboardInterrupt:
                interrupted = True
                self.cancel.set()
        try:
            self.observers.call("on_run_end", run=info, summary=outcome.summary(pl.name))
        except KeyboardInterrupt:
            pass  # the run is recorded; its outcome stands
        return outcome

    def _outcome(
        self, results: dict[str, StageResult], interrupted: bool, duration: float
    ) -> RunOutcome:
        status = "ok"
        exit_code = EXIT_OK
        if interrupted or self.cancel.is_set():
            status, exit_code = "interrupted", EXIT_INTERRUPTED
        elif any(r.status == "failed" for r in results.values()):
            status = "failed"
            exit_code = EXIT_LOCK if self._lock_timed_out else EXIT_FAILED
        ordered = [results.get(n) or self._not_run(n, interrupted) for n in self.pipeline.order]
        metrics = self._metrics(ordered, duration)
        return RunOutcome(self.run_id, status, ordered, exit_code, duration, metrics)

    # -- scheduling -----------------------------------------------------------

    def _not_run(self, name: str, interrupted: bool) -> StageResult:
        reason = "not run: the run was interrupted" if interrupted else "not run"
        return StageResult(name, "skipped", reason=reason)

    def _schedule(self) -> dict[str, StageResult]:
        from .started import Attempt, Watcher, signals_held

        pl = self.pipeline
        stages = pl.stages
        remaining = {n: set(st.deps) for n, st in stages.items()}
        children: dict[str, list[str]] = {n: [] for n in stages}
        for st in stages.values():
            for d in st.deps:
                children[d].append(st.name)
        results: dict[str, StageResult] = {}
        self._results_so_far = results
        ready: list[tuple[int, str]] = [
            (stages[n].index, n) for n, deps in remaining.items() if not deps
        ]
        heapq.heapify(ready)
        running: set[str] = set()
        deferred: list[tuple[float, int, str, float]] = []  # (next_try, index, name, deadline)
        not_cheap: set[str] = set()
        stop = False
        jobs = max(1, self.options.jobs)
        # `running` holds the stages handed to the pool until their commit
        # is done. Besides the `jobs` at work, up to `jobs` more wait in the
        # pool's queue, so that a worker that finishes a stage starts the
        # next at once instead of waiting for this thread to wake and hand
        # it one, and the committer's batch may hold some more; the pool's
        # `jobs` threads still bound what runs at once. A queued stage that
        # a failure or an interrupt overtook returns "not run" unstarted.
        in_flight = 2 * jobs + COMMITS_IN_FLIGHT
        self._halt.clear()
        # Completions arrive on one queue: O(1) per event, however many
        # stages are running or committing; the watcher's wake-up pipe says
        # one arrived. Stages started in this thread are watched directly.
        events: queue.SimpleQueue[tuple[str, str, Future[Any]]] = queue.SimpleQueue()
        watcher = Watcher(jobs)
        # Commits of started stages, made by this thread in batches: when
        # nothing else runs, when the batch is full, or once its first
        # job has waited LINGER_S (the committer thread's own rules). Where
        # commits are slow (a disk that takes its time to create files),
        # they go to the committer thread instead, so that this one keeps
        # starting commands meanwhile; where they are quick, that thread
        # would only cost a GIL hand-off after each of its system calls.
        batch: list[Any] = []
        batch_since = 0.0
        commit_cost = 0.0  # seconds per job of this thread's commits (a moving average)
        batches = 0
        # Slow commits: the batch at which this thread measures again, and
        # the gap to the next such look (doubled at each look that finds
        # them still slow).
        look_again, look_gap = 32, 32

        def commit_batch() -> None:
            nonlocal batch, commit_cost, batches, look_again, look_gap
            jobs_, batch = batch, []
            batches += 1
            if commit_cost > SLOW_COMMIT_S:
                if batches < look_again:
                    for job in jobs_:
                        self.committer.submit(job)
                    return
                # Looks 32, 64, 128... batches apart: a disk seldom gets
                # faster, and each look holds this thread for a whole slow
                # batch (1-2 ms on an ext4: looking every 32 batches, 14
                # looks held it 17 ms of a 1,000-stage run).
                look_gap *= 2
                look_again = batches + look_gap
            t = time.perf_counter()
            with signals_held():
                self.committer.commit(jobs_)
            cost = (time.perf_counter() - t) / len(jobs_)
            if batches > 1:  # the first one makes the state's files: not a measure
                commit_cost = cost if batches == 2 else 0.7 * commit_cost + 0.3 * cost

        def finish(name: str, result: StageResult) -> None:
            nonlocal stop
            results[name] = result
            if self.on_result is not None:
                self.on_result(result)
            if result.status == "failed":
                if not self.options.keep_going:
                    stop = True
                    self._halt.set()
                for child in sorted(pl.downstream_of([name]) - {name}):
                    if child not in results:
                        results[child] = StageResult(
                            child, "skipped", reason=f"not run: upstream stage {name!r} failed"
                        )
                        self._observe_end(child, results[child])
                        if self.on_result is not None:
                            self.on_result(results[child])
                return
            for child in children[name]:
                deps = remaining[child]
                deps.discard(name)
                if not deps and child not in results:
                    heapq.heappush(ready, (stages[child].index, child))

        scheduler = threading.get_ident()

        def notify(kind: str, name: str) -> Callable[[Future[Any]], None]:
            def callback(fut: Future[Any]) -> None:
                events.put((kind, name, fut))
                if threading.get_ident() != scheduler:  # this thread looks before it waits
                    watcher.wake()

            return callback

        def on_worked(name: str) -> Callable[[Future[Any]], None]:
            """In the worker: a stage handed to the committer wakes this
            thread only once committed (one wake-up per commit batch)."""

            def callback(fut: Future[Any]) -> None:
                outcome = None if fut.cancelled() or fut.exception() else fut.result()
                if isinstance(outcome, Future):
                    outcome.add_done_callback(notify("commit", name))
                else:
                    events.put(("run", name, fut))
                    watcher.wake()

            return callback

        def can_start(name: str) -> bool:
            """Room for one more stage: a started one needs a free slot and
            fewer than ``jobs`` stages at work (queued for a worker thread
            included); a worker thread's needs room in flight, or, while
            started ones run, fewer than ``jobs`` at work too."""
            if self.started.startable(stages[name]):
                return watcher.free_slot() is not None and self._working < jobs
            if watcher.attempts:
                return self._working < jobs
            return len(running) < in_flight

        def submit(name: str, deadline: float | None = None) -> None:
            running.add(name)
            if self.started.startable(stages[name]):
                launched(name, self.started.prepare(name, deadline))
                return
            with self._working_lock:
                self._working += 1
            fut = self._executor().submit(self._work, name, deadline)
            fut.add_done_callback(on_worked(name))

        def launched(name: str, outcome: Any) -> None:
            """Start a prepared attempt (``outcome``) in a free slot, or
            settle a stage that is not to start."""
            if isinstance(outcome, Attempt):
                slot = watcher.free_slot()
                assert slot is not None
                with self._working_lock:
                    self._working += 1
                outcome = self.started.launch(outcome, slot)
                if isinstance(outcome, Future):  # declined: a worker thread runs it
                    outcome.add_done_callback(on_worked(name))
                    return
                if isinstance(outcome, Attempt):
                    watcher.add(outcome)
                    return
                self._stop_working()
            if isinstance(outcome, StageResult):
                self._halt_on(outcome)
            settle(name, outcome)

        # A started stage that waits for a slot is locked, decided and has
        # its context made meanwhile (prepared), so that when a command ends
        # the next one starts at once. One that waits longer than
        # PREPARED_HOLD_S lets go of its lock and goes back to the ready
        # ones, and none is prepared again until a command ends: commands
        # that long gain nothing from it, and another runner with a free
        # slot may take the stage meanwhile.
        prepared: Attempt | None = None
        hold_back = False

        def let_go() -> Attempt:
            """The prepared attempt, its lock released and no longer in hand."""
            nonlocal prepared
            a, prepared = prepared, None
            assert a is not None
            self.started.drop(a)
            running.discard(a.st.name)
            return a

        def queue_prepared() -> bool:
            """Hand the prepared attempt to a running one's processor, to
            start in that slot the moment the running one ends well (see
            :meth:`pipekit.Stage.start_after`); whether it is out of hand."""
            nonlocal prepared
            if prepared is None:
                return False
            for a in list(watcher.attempts.values()):
                if a.slot in watcher.queued or type(a.st.processor) is not type(
                    prepared.st.processor
                ):
                    continue  # (a processor queues only behind its own work)
                outcome = self.started.queue_behind(prepared, a)
                if outcome is None:  # declined: it waits for a free slot
                    return False
                q, prepared = prepared, None
                if isinstance(outcome, Attempt):
                    watcher.queue(outcome)
                else:
                    settle(q.st.name, outcome)
                return True
            return False

        def withdraw_queued(now: float) -> None:
            """Queued attempts do not start once the run stops, nor after
            waiting PREPARED_HOLD_S (their end then comes as not started)."""
            for q in watcher.queued.values():
                if not q.withdrawn and (
                    stop or self.cancel.is_set() or now > q.prepared_at + PREPARED_HOLD_S
                ):
                    q.withdrawn = True
                    q.handle.withdraw()

        def give_back(q: Attempt) -> None:
            """A queued attempt that never started: its lock released, its
            stage ready again (unless the run stops)."""
            nonlocal hold_back
            self.started.drop(q)
            running.discard(q.st.name)
            if q.withdrawn:
                hold_back = True
            if not stop and not self.cancel.is_set():
                heapq.heappush(ready, (q.st.index, q.st.name))

        def fill() -> None:
            """Start what may start: the prepared attempt first, then ready
            stages (a cheap decision inline for one that is up to date);
            prepare the next started stage when no slot is free, and queue
            it behind a running one where its processor can."""
            nonlocal prepared, hold_back
            now = time.monotonic()
            if watcher.queued:
                withdraw_queued(now)
            if prepared is not None and (stop or self.cancel.is_set()):
                let_go()
            elif prepared is not None and now > prepared.prepared_at + PREPARED_HOLD_S:
                a = let_go()
                heapq.heappush(ready, (a.st.index, a.st.name))
                hold_back = True
            if prepared is not None and can_start(prepared.st.name):
                a, prepared = prepared, None
                launched(a.st.name, a)
            elif prepared is not None:
                queue_prepared()
            while ready and not stop and not self.cancel.is_set():
                _, name = ready[0]
                if name in results:
                    heapq.heappop(ready)
                    continue
                if not self.forced(name) and name not in not_cheap:
                    t_decide = time.perf_counter()
                    d = self.evaluator.decide_cheaply(stages[name])
                    if d is not None and not d.run:
                        heapq.heappop(ready)
                        spent = time.perf_counter() - t_decide
                        finish(name, self._skipped(stages[name], d, spent))
                        continue
                    not_cheap.add(name)
                if not can_start(name):
                    if prepared is None and not hold_back and self.started.startable(stages[name]):
                        heapq.heappop(ready)
                        running.add(name)
                        try:
                            outcome = self.started.prepare(name, None)
                        except BaseException:
                            running.discard(name)
                            raise
                        if isinstance(outcome, Attempt):
                            prepared = outcome
                            if queue_prepared():
                                continue  # and the next one may queue in another slot
                        else:
                            settle(name, outcome)
                            continue
                    break
                heapq.heappop(ready)
                submit(name)

        def step(a: Any) -> Any:
            """A started stage's descriptor is ready: None while it runs or
            once its commit is in the batch (its end then comes as an
            event), else its result. Once it has ended and its processor
            has said it succeeded, the next stage starts in its slot before
            its outputs are checked and its commit queued."""
            nonlocal batch_since, hold_back
            ended, error = self.started.poll(a)
            q = watcher.queued.get(a.slot) if not ended else None
            if q is not None:
                # The one queued behind it shares its descriptor: its end
                # (withdrawn: not started) comes there, and polling it may
                # read `a`'s end too, which no descriptor would tell again:
                # `a` is polled once more after it.
                q_ended, q_error = self.started.poll(q)
                if q_ended and (q_error is not None or not getattr(q.handle, "started", True)):
                    del watcher.queued[q.slot]
                    if q_error is not None:
                        return_later.append((q, self.started.end(q, q_error, batch)))
                    else:
                        give_back(q)
                ended, error = self.started.poll(a)
            if not ended:
                watcher.update(a)
                return None
            watcher.remove(a)
            self._stop_working()
            hold_back = False
            q = watcher.promote(a.slot)
            if q is not None:  # started by the processor the moment `a` ended well
                with self._working_lock:
                    self._working += 1
                q.t0 += time.monotonic() - q.prepared_at  # its wait is not its time
                recheck.append(q)
            if error is None and not getattr(a.handle, "started", True):
                give_back(a)
                return None
            if error is None:
                error = self.started.finish(a)
            if error is None:  # a failure must stop the run before anything starts
                fill()
            if not batch:
                batch_since = time.monotonic()
            outcome = self.started.end(a, error, batch)
            if isinstance(outcome, Future):
                outcome.add_done_callback(notify("commit", a.st.name))
                return None
            return outcome

        recheck: list[Attempt] = []  # promoted: their reply may have come already
        return_later: list[tuple[Attempt, Any]] = []

        def ready_attempts(timeout: float) -> Iterator[Attempt]:
            """The attempts whose descriptor is ready, then the ones promoted
            meanwhile (their reply may have been read with another's)."""
            yield from watcher.wait(timeout)
            while recheck:
                yield recheck.pop()

        def handle(kind: str, name: str, fut: Future[Any]) -> None:
            if kind == "commit":
                running.discard(name)
                finish(name, fut.result())
                return
            settle(name, fut.result())

        def settle(name: str, outcome: Any) -> None:
            running.discard(name)
            if isinstance(outcome, tuple):  # (_Deferred, deadline, tries)
                marker, deadline, tries = outcome
                if time.monotonic() >= deadline:
                    self._lock_timed_out.append(name)
                    failure = self._lock_failure(name, marker.holder)
                    self._observe_end(name, failure)
                    finish(name, failure)
                else:
                    delay = min(0.25, 0.005 * (2 ** min(tries, 6)))
                    heapq.heappush(
                        deferred, (time.monotonic() + delay, stages[name].index, name, deadline)
                    )
                    self._tries[name] = tries
            else:
                finish(name, outcome)

        try:
            while True:
                # Cheap decisions inline: a stage whose hashes are all cached
                # and that is up to date never reaches a worker thread.
                fill()
                now = time.monotonic()
                while deferred and deferred[0][0] <= now and can_start(deferred[0][2]) and not stop:
                    _, _, name, deadline = heapq.heappop(deferred)
                    submit(name, deadline)
                if not running:
                    if deferred and not stop and not self.cancel.is_set():
                        time.sleep(max(0.0, deferred[0][0] - time.monotonic()))
                        continue
                    break
                if batch and (
                    not watcher.attempts
                    or len(batch) >= self.committer.MAX_BATCH
                    or time.monotonic() - batch_since >= self.committer.LINGER_S
                ):
                    commit_batch()
                    continue  # the commits' events are queued: handle them first
                timeout = 0.5
                soonest = watcher.next_deadline()
                if batch:
                    soonest = min(batch_since + self.committer.LINGER_S, soonest or 1e300)
                if deferred:
                    soonest = min(deferred[0][0], soonest or deferred[0][0])
                if prepared is not None:
                    let_go_at = prepared.prepared_at + PREPARED_HOLD_S
                    soonest = min(let_go_at, soonest or let_go_at)
                for q in watcher.queued.values():
                    if not q.withdrawn:
                        let_go_at = q.prepared_at + PREPARED_HOLD_S
                        soonest = min(let_go_at, soonest or let_go_at)
                if soonest is not None:
                    timeout = min(timeout, max(0.0, soonest - time.monotonic()))
                if not events.empty():  # queued by this thread: no wake-up came for them
                    timeout = 0.0
                for a in ready_attempts(timeout):
                    if (outcome := step(a)) is not None:
                        settle(a.st.name, outcome)
                while return_later:
                    q, outcome = return_later.pop()
                    settle(q.st.name, outcome)
                for a in watcher.expired(time.monotonic()):
                    self.started.kill(a, "timeout")  # poll() then sees it end
                while True:  # what the other threads said meanwhile
                    try:
                        event = events.get_nowait()
                    except queue.Empty:
                        break
                    handle(*event)
        except KeyboardInterrupt:
            self.cancel.set()
            fill()  # a prepared stage lets go of its lock
            log.warning("interrupted: stopping the stages in hand")
            for a in [*watcher.attempts.values(), *watcher.queued.values()]:
                self.started.kill(a, "cancelled")
            if batch:  # their work is done: commit it
                commit_batch()

            def note(name: str, outcome: Any) -> None:
                running.discard(name)
                if isinstance(outcome, StageResult):
                    results[name] = outcome
                    if self.on_result is not None:
                        try:
                            self.on_result(outcome)
                        except BaseException:
                            pass

            while running:
                for a in ready_attempts(0.5 if events.empty() else 0.0):
                    if (outcome := step(a)) is not None:
                        note(a.st.name, outcome)
                while return_later:
                    q, outcome = return_later.pop()
                    note(q.st.name, outcome)
                if batch:  # one that ended well before it was killed
                    commit_batch()
                while True:
                    try:
                        kind, name, fut = events.get_nowait()
                    except queue.Empty:
                        break
                    try:
                        outcome = fut.result()
                    except BaseException:
                        running.discard(name)
                        continue
                    if isinstance(outcome, Future):
                        outcome.add_done_callback(notify("commit", name))
                        continue
                    note(name, outcome)
            raise
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)
                self._pool = None
            self.committer.close()
            watcher.close()
        return results

    def _lock_failure(self, name: str, holder: str | None) -> StageResult:
        who = f" (held by {holder})" if holder else ""
        timeout = self.options.lock_timeout
        return StageResult(
            name,
            "failed",
            reason=f"could not take the stage's lock within {timeout:g}s{who}; "
            "raise --lock-timeout or wait for the other run",
            error="lock timeout",
        )

    # -- one stage ------------------------------------------------------------

    def _observe_end(self, name: str, result: StageResult) -> None:
        if self.observers.active:
            stage = self.pipeline.stages[name]
            self.observers.call("on_stage_end", run=self.info, stage=stage.config, result=result)

    def _skipped(self, st: Any, d: Decision, duration: float) -> StageResult:
        entry = self.state.get(st.name)
        if entry is None or entry.get("fingerprint") != d.fingerprint:
            # decide() read the record: its outputs are in the decision
            self.state.update(st.name, self._state_entry(st, d, d.outputs, "ok", 0.0, 0))
        elif entry.get("store_gen") != (gen := self.evaluator.store_generation()):
            # decide() found the record in the store: trust the entry again
            self.state.update(st.name, {**entry, "store_gen": gen})
        result = StageResult(
            st.name, "skipped", duration, d.reason, key=d.key, fingerprint=d.fingerprint
        )
        self._observe_end(st.name, result)
        return result

    def _work(self, name: str, deadline: float | None = None) -> Any:
        self._handed.done = False
        try:
            outcome = self._execute(name, deadline)
            if isinstance(outcome, StageResult):
                self._halt_on(outcome)
            return outcome
        finally:
            if not self._handed.done:
                self._stop_working()

    def _stop_working(self) -> None:
        with self._working_lock:
            self._working -= 1

    def _halt_on(self, result: StageResult) -> None:
        """A failure stops the run (without --keep-going): said here, in the
        thread that saw it, so that no stage queued behind it starts."""
        if result.status == "failed" and not self.options.keep_going:
            self._halt.set()

    def _execute(self, name: str, deadline: float | None = None) -> Any:
        """Worker thread: lock, decide, run, hand over to the committer.

        Up-to-date stages whose hashes are cached were already skipped by
        the scheduler without a lock; the rest are decided under their lock,
        so that a stage another runner just committed is seen as done."""
        from .records import Interrupted

        if self._halt.is_set() or self.cancel.is_set():
            return self._not_run(name, self.cancel.is_set())  # queued, then overtaken
        st = self.pipeline.stages[name]
        t0 = time.perf_counter()
        try:
            lease, d, outcome = self._locked_decision(st, deadline, t0)
            if lease is None:
                return outcome
            handed_off = False
            try:
                outcome = self._run_locked(st, d, lease, t0)
                handed_off = isinstance(outcome, Future)  # the committer releases the lease
                return outcome
            finally:
                if not handed_off:
                    lease.release()
        except Interrupted as exc:
            info = dict(getattr(exc, "info", None) or {})
            reason = "interrupted"
            if "checkpoint_record" in info:
                reason += (
                    f"; checkpointed at record {info['checkpoint_record']:,} (input "
                    f"{info.get('checkpoint_fraction', 0.0):.0%} read): run again to resume"
                )
            return StageResult(
                name, "failed", time.perf_counter() - t0, reason, error="interrupted", info=info
            )
        except Exception as exc:  # a bug or an I/O error must fail the stage, not the runner
            return self._unexpected(name, t0, exc)

    def _locked_decision(self, st: Any, deadline: float | None, t0: float) -> tuple[Any, Any, Any]:
        """Take stage ``st``'s lock and decide under it: ``(lease, decision,
        None)`` when it must run, the lease held; else ``(None, None,
        outcome)``: a deferral (its lock is held elsewhere: try again until
        ``deadline``) or the result of a stage that need not or cannot run."""
        name = st.name
        lease = self.backends.locks.lock(
            f"stage/{self.pipeline.name}/{name}", self.options.lock_ttl
        )
        if not lease.acquire(timeout=0):
            if deadline is None:
                lt = self.options.lock_timeout
                deadline = time.monotonic() + (lt if lt is not None else 10**9)
            return None, None, (_Deferred(lease.holder()), deadline, self._tries.get(name, 0) + 1)
        try:
            d = self.evaluator.decide(st, forced=self.forced(name))
        except BaseException:
            lease.release()
            raise
        if d.run and d.fingerprint is not None:
            return lease, d, None
        lease.release()
        if not d.run:
            return None, None, self._skipped(st, d, time.perf_counter() - t0)
        return (
            None,
            None,
            StageResult(name, "failed", time.perf_counter() - t0, d.reason, error=d.reason),
        )

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(
                max(1, self.options.jobs), thread_name_prefix="pipekit-stage"
            )
        return self._pool

    def _unexpected(self, name: str, t0: float, exc: Exception) -> StageResult:
        """A stage failed by an error outside its processor's work."""
        if isinstance(exc, PipekitError):  # said in words (e.g. a backend is unreachable)
            log.debug("stage %s: %s", name, exc, exc_info=True)
        else:
            log.exception("stage %s: unexpected error", name)
        return StageResult(
            name,
            "failed",
            time.perf_counter() - t0,
            f"{type(exc).__name__}: {exc}",
            error=f"{type(exc).__name__}: {exc}",
        )

    def _run_locked(
        self, st: Any, d: Decision, lease: Any, t0: float, announced: bool = False
    ) -> Any:
        """Run the attempts; on success hand the commit to the group
        committer and return its future, else return the failed result.
        ``announced``: the observers and the in-flight log know already."""
        from .records import Interrupted

        name = st.name
        policy = st.config.retry
        if not announced:
            self.observers.call("on_stage_start", run=self.info, stage=st.config)
            self.inflight.note({p.parent for p in st.output_paths})
        attempts = 0
        last_info: dict[str, Any] = {}

        def retryable(exc: BaseException) -> bool:
            if isinstance(exc, (NonRetryable, Interrupted, LeaseLost)):
                return False
            return not isinstance(exc, tuple(st.processor.non_retryable))

        def sleep(seconds: float) -> None:
            if self.cancel.wait(seconds):
                raise Interrupted()

        def before_sleep(state: Any) -> None:
            exc = state.outcome.exception()
            log.warning(
                "stage %s: attempt %d failed (%s: %s); retrying in %.2fs",
                name,
                state.attempt_number,
                type(exc).__name__,
                exc,
                state.next_action.sleep if state.next_action else 0.0,
            )

        def attempts_of() -> Any:
            """One try, or tenacity's retrying loop when the policy allows more."""
            if policy.attempts == 1:
                return None
            import tenacity

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

        retryer = attempts_of()
        try:
            if retryer is None:
                attempts = 1
                tmps, last_info, known = self._attempt(st, 1, d, lease)
            else:
                for attempt in retryer:
                    with attempt:
                        attempts = attempt.retry_state.attempt_number
                        tmps, last_info, known = self._attempt(st, attempts, d, lease)
        except Interrupted as exc:
            if not exc.info and last_info:
                exc.info = dict(last_info)
            raise
        except Exception as exc:
            return self._attempts_failed(st, d, t0, attempts, exc, last_info)
        # No longer working: the committer lingers for other stages' commits
        # only when some are still at work, not for this one's.
        self._handed.done = True
        self._stop_working()
        return self._to_committer(st, d, lease, t0, attempts, tmps, last_info, known)

    def _attempts_failed(
        self,
        st: Any,
        d: Decision,
        t0: float,
        attempts: int,
        exc: BaseException,
        last_info: dict[str, Any],
    ) -> StageResult:
        """The result, state entry and observer call of a stage whose last
        attempt raised ``exc``."""
        duration = time.perf_counter() - t0
        message = (
            str(exc)
            if isinstance(exc, (StageFailed, NetworkRefused))
            else f"{type(exc).__name__}: {exc}"
        )
        info = dict(getattr(exc, "info", None) or last_info)
        network = info.pop("network", None)
        tb = getattr(exc, "remote_traceback", None)
        if tb:
            info["traceback"] = tb
        reason = f"failed after {attempts} attempt(s): {message}"
        result = self._failure(st, d, duration, attempts, reason, message, info, network)
        self.observers.call("on_stage_end", run=self.info, stage=st.config, result=result)
        return result

    def _failure(
        self,
        st: Any,
        d: Decision,
        duration: float,
        attempts: int,
        reason: str,
        error: str,
        info: dict[str, Any],
        network: Any,
    ) -> StageResult:
        """A failed stage's result, and its state entry."""
        self.state.update(
            st.name, self._state_entry(st, d, {}, "failed", duration, attempts, error)
        )
        return StageResult(
            st.name,
            "failed",
            duration,
            reason,
            attempts=attempts,
            key=d.key,
            fingerprint=d.fingerprint,
            error=error,
            info=info,
            network=network,
        )

    def _to_committer(
        self,
        st: Any,
        d: Decision,
        lease: Any,
        t0: float,
        attempts: int,
        tmps: list[Path],
        last_info: dict[str, Any],
        known: dict[str, str],
        batch: list[Any] | None = None,
        checkpointed: bool = True,
    ) -> Future[Any]:
        """Hand a stage whose attempt succeeded to the group committer (or
        to ``batch``, which the calling thread commits itself): the future
        of its result. The commit releases ``lease``."""
        from .commit import CommitJob

        name = st.name
        network = last_info.pop("network", None)

        def make_record(digests: dict[str, str]) -> IdemRecord:
            return IdemRecord(
                key=d.key or "",
                status="SUCCESS",
                fingerprint=d.fingerprint or "",
                result={
                    "outputs": digests,
                    "stage": name,
                    "run_id": self.run_id,
                    "by": f"run {self.run_id} on {HOST}",
                },
                created=time.time(),
                token=getattr(lease, "token", None),
                fence=getattr(lease, "key", None),
            )

        def done(digests: dict[str, str] | None, err: BaseException | None) -> StageResult:
            duration = time.perf_counter() - t0
            if err is not None or digests is None:
                message = f"commit failed: {type(err).__name__}: {err}"
                result = self._failure(
                    st, d, duration, attempts, message, message, last_info, network
                )
            else:
                self.state.update(name, self._state_entry(st, d, digests, "ok", duration, attempts))
                try:  # the work they resumed is committed
                    self._clear_checkpoints(st, d, checkpointed)
                except Exception as exc:
                    log.warning("stage %s: could not clear its checkpoint: %s", name, exc)
                result = StageResult(
                    name,
                    "ok",
                    duration,
                    d.reason,
                    attempts=attempts,
                    key=d.key,
                    fingerprint=d.fingerprint,
                    info=last_info,
                    network=network,
                )
            self._halt_on(result)
            self.observers.call("on_stage_end", run=self.info, stage=st.config, result=result)
            return result

        job = CommitJob(
            list(st.outputs), tmps, list(st.output_paths), lease, make_record, done, known
        )
        if batch is not None:
            batch.append(job)
            return job.future
        return self.committer.submit(job)

    @staticmethod
    def _fence(lease: Any) -> tuple[str, int] | None:
        token = getattr(lease, "token", None) if lease is not None else None
        return (lease.key, token) if token is not None else None

    def checkpoint_for(self, st: Any, d: Decision, lease: Any = None) -> Any:
        from .stage import Checkpoint, stage_namespace

        namespace = stage_namespace(self.pipeline.name, st.name)
        return Checkpoint(
            self.backends.checkpoints, namespace, d.fingerprint or "", fence=self._fence(lease)
        )

    @functools.cached_property
    def _checkpoint_namespaces(self) -> set[str] | None:
        """The checkpoint store's namespaces when first asked (None: the
        store cannot list them)."""
        from .netguard import trusted

        lister = getattr(self.backends.checkpoints, "namespaces", None)
        if lister is None:
            return None
        with trusted():
            return set(lister())

    def _clear_checkpoints(self, st: Any, d: Decision, touched: bool = True) -> None:
        """Remove a committed stage's checkpoints: both kinds share its
        namespace, so one listing tells whether there is any (the usual
        case is none: one listing per stage, not two). ``touched`` False:
        this attempt neither saved nor loaded one, so there is one only if
        the namespace was there when the run looked (a store that can list
        its namespaces is listed once, not once per stage)."""
        from .netguard import trusted
        from .stage import stage_namespace

        namespace = stage_namespace(self.pipeline.name, st.name)
        store = self.backends.checkpoints
        with trusted():
            seen = None if touched else self._checkpoint_namespaces
            if seen is not None and namespace not in seen:
                return
            if not store.list(namespace):
                return
        self.checkpoint_for(st, d).clear()
        self.record_checkpoint_for(st, d).clear()

    def record_checkpoint_for(self, st: Any, d: Decision, lease: Any = None) -> Any:
        from .record_checkpoint import RecordCheckpoint
        from .stage import stage_namespace

        return RecordCheckpoint(
            self.backends.checkpoints,
            stage_namespace(self.pipeline.name, st.name),
            d.fingerprint or "",
            fence=self._fence(lease),
            label=f"stage {st.name}",
        )

    def _record_run(self, st: Any, d: Decision, lease: Any) -> Any:
        from .config import failure_limit
        from .records import RecordRun

        cfg = st.config
        progress = None
        if self.progress is not None:
            display, name = self.progress, st.name

            def progress(total: int, done: int, records: int) -> Any:
                return display.stage(name, total, done, records)

        return RecordRun(
            pipeline=self.pipeline.name,
            stage=st.name,
            fingerprint=d.fingerprint or "",
            input_keys=list(st.inputs),
            checkpoint=self.record_checkpoint_for(st, d, lease),
            dead_letters=lambda: self.backends.dead_letters,
            every_records=cfg.checkpoint.every_records,
            every_seconds=cfg.checkpoint.every_seconds,
            retry=cfg.record_retry,
            max_failures=failure_limit(cfg.max_failures),
            on_failed=self._record_failed(st) if self.observers.active else None,
            progress=progress,
            on_checkpoint=self.hashcache.save,
        )

    def _context(
        self, st: Any, attempt: int, d: Decision, lease: Any, is_record: bool
    ) -> tuple[list[Path], Any]:
        """The temporary outputs of one attempt (output folders made), and
        the :class:`pipekit.StageContext` it runs with."""
        from .stage import StageContext

        tmps = []
        for final in st.output_paths:
            if not os.path.isdir(final.parent):  # a stat, not a failing mkdir per stage
                final.parent.mkdir(parents=True, exist_ok=True)
            if is_record:
                from .records import partial_path_for, remove_stale_partials

                partial = partial_path_for(final, d.fingerprint or "")
                remove_stale_partials(final, partial)
                tmps.append(partial)
            else:
                tmps.append(temp_path_for(final))
        ctx = StageContext(
            stage_name=st.name,
            run_id=self.run_id,
            inputs=[Path(p) for p in st.input_paths],  # a cached plan holds them as str
            outputs=tmps,
            params=st.params,
            log=logging.getLogger(f"pipekit.stage.{st.name}"),
            checkpoint=self.checkpoint_for(st, d, lease),
            final_outputs=list(st.output_paths),
            attempt=attempt,
            workdir=self.pipeline.root,
            timeout=st.config.timeout,
            cancelled=self.cancel,
        )
        return tmps, ctx

    def _attempt(
        self, st: Any, attempt: int, d: Decision, lease: Any = None
    ) -> tuple[list[Path], dict[str, Any], dict[str, str]]:
        """Run one attempt: (temp outputs, info, output hashes already known)."""
        from .execute import needs_worker, run_in_process, run_in_worker
        from .stage import RecordStage

        is_record = isinstance(st.processor, RecordStage)
        tmps, ctx = self._context(st, attempt, d, lease, is_record)
        policy = self.network_policy(st)
        record_run = self._record_run(st, d, lease) if is_record else None
        try:
            if needs_worker(st):
                records = None
                progress = None
                if record_run is not None:
                    self.hashcache.save()  # a resumed run must not hash the inputs again
                    records = {
                        "pipeline": self.pipeline.name,
                        "fingerprint": record_run.fingerprint,
                        "namespace": record_run.checkpoint.namespace,
                        "fence": record_run.checkpoint.fence,
                        "run": attrs.asdict(self.info),
                    }
                    progress = record_run.progress
                info = run_in_worker(
                    st,
                    ctx,
                    pipeline_file=self.pipeline.file,
                    backend=self.backends.name,
                    timeout=st.config.timeout,
                    records=records,
                    progress=progress,
                    policy=policy,
                )
            else:
                info = run_in_process(st, ctx, record_run=record_run, policy=policy)
            self._check_attempt(st, tmps, lease)
        except BaseException as exc:
            # a record stage's partial output stays for its resume
            self._discard_attempt(exc, ctx, [] if is_record else tmps)
            raise
        known = {}
        if record_run is not None and record_run.output_digest:
            known[st.outputs[0]] = record_run.output_digest
        return tmps, dict(info), known

    @staticmethod
    def _check_attempt(st: Any, tmps: list[Path], lease: Any) -> None:
        """After an attempt's work: raise unless it wrote every output and
        its lease is still held."""
        for key, tmp in zip(st.outputs, tmps):
            if not tmp.exists():
                raise StageFailed(f"the processor did not write output {key!r}")
        if getattr(lease, "lost", False):
            raise LeaseLost.of(lease)

    @staticmethod
    def _discard_attempt(exc: BaseException, ctx: Any, tmps: list[Path]) -> None:
        """A failed attempt: ``exc`` keeps what ``ctx.info`` held (unless it
        has facts of its own), and its temporary outputs ``tmps`` go."""
        if not getattr(exc, "info", None):
            try:
                exc.info = dict(ctx.info)  # type: ignore[attr-defined]
            except Exception:
                pass
        for tmp in tmps:
            unlink_quietly(tmp)

    def network_policy(self, st: Any) -> Any:
        """The network guard's policy for stage ``st`` (DESIGN §8): the
        pipeline's allow list plus the stage's, or everything when the stage
        or the command line allows the network."""
        policy = self._policies.get(st.name)
        if policy is None:
            from .fingerprint import processor_ref
            from .netguard import Policy

            cfg = st.config
            net = self.pipeline.network
            allow_all = (
                cfg.allow_network
                or self.options.allow_network_all
                or st.name in self.options.allow_network
            )
            policy = Policy(
                st.name,
                processor_ref(st).name,
                [*net.allow, *cfg.network.allow],
                allow_all=allow_all,
                isolation=cfg.network.isolation or net.isolation,
            )
            self._policies[st.name] = policy
        return policy

    def _record_failed(self, st: Any) -> Callable[[Any, BaseException], None]:
        def call(record: Any, error: BaseException) -> None:
            from .netguard import trusted

            with trusted():  # observers are the runner's, not the processor's
                self.observers.call(
                    "on_record_failed", run=self.info, stage=st.config, record=record, error=error
                )

        return call

    def _state_entry(
        self,
        st: Any,
        d: Decision,
        outputs: dict[str, str],
        status: str,
        duration: float,
        attempts: int,
        error: str | None = None,
    ) -> dict[str, Any]:
        return {
            "fingerprint": d.fingerprint,
            "key": d.key,
            "processor": processor_ref(st).name,
            "version": processor_ref(st).version,
            "params_sha": params_digest(st.params_canonical),
            "inputs": d.inputs,
            "outputs": outputs,
            "status": status,
            "run_id": self.run_id,
            "finished_at": time.time(),
            "duration_s": round(duration, 6),
            "attempts": attempts,
            "error": error,
            "store_gen": self.evaluator.store_generation(),
        }

    # -- end of run -------------------------------------------------------------

    def _metrics(self, results: list[StageResult], duration: float) -> dict[str, Any]:
        counts = {"ok": 0, "skipped": 0, "failed": 0}
        sums = dict.fromkeys(RECORD_COUNTERS, 0)
        resumed = 0
        for r in results:
            counts[r.status] = counts.get(r.status, 0) + 1
            for key in RECORD_COUNTERS:
                sums[key] += int(r.info.get(key) or 0)
            if r.info.get("resumed_from"):
                resumed += 1
        return {
            "stages_ok": counts["ok"],
            "stages_skipped": counts["skipped"],
            "stages_failed": counts["failed"],
            **sums,
            "stages_resumed": resumed,
            "records_per_s": round(sums["records_in"] / duration, 1) if duration > 0 else 0.0,
            "hashed_files": self.hashcache.reads,
        }

    def _finish(self, outcome: RunOutcome, started: float) -> None:
        from .runs import write_run_record

        pl = self.pipeline
        self.hashcache.save()
        self.state.save(pl.name)
        self.inflight.close()
        outcome.record_path = write_run_record(
            pl.state_dir,
            {
                "run_id": self.run_id,
                "pipeline": pl.name,
                "file": str(pl.file),
                "host": HOST,
                "pid": os.getpid(),
                "backend": self.backends.name,
                "jobs": self.options.jobs,
                "started_at": started,
                "ended_at": time.time(),
                "duration_s": round(outcome.duration_s, 6),
                "status": outcome.status,
                "exit_code": outcome.exit_code,
                "metrics": outcome.metrics,
                "plugin_errors": self.observers.errors,
                "network_allowed": [r.name for r in outcome.results if r.network == "allowed"],
                "stages": [r.record() for r in outcome.results],
            },
        )
