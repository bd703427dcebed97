"""The scheduler: which stage starts when. One event loop in the calling
(main) thread; the stages' work runs in a pool of ``--jobs`` threads, each
through the one :class:`~._lifecycle.Lifecycle`.

    Scheduler.run()
      loop until nothing is ready, waiting for its lock, or in flight:
        start_ready()       cheap decisions inline (up to date: skipped at
                            once); the rest to the pool, 2 x jobs at most
        retry_lock_waits()  stages whose lock another runner held
        wait_for_events()   a stage's work ended, or its commit did (one
                            queue of ended futures, fed by their callbacks)
        handle(...)         result -> dependents ready | LockBusy -> wait
      SIGINT/SIGTERM while the loop runs: :meth:`Scheduler.signalled` (from
      the signal handler) sets a flag and wakes the loop, which then stops:
      nothing new starts, work in hand stops (its processor sees
      ``cancel``), and the same loop runs until it has all ended. (Not a
      KeyboardInterrupt raised into the loop: one landing inside a
      ``Future``'s lock left it held, and the run waited forever.)

A run never ends with a stage it was asked to make up to date left
unresolved: the loop ends only when no stage is ready, in flight or
waiting for a lock, and every stage then has a result (a stage that a
failure or an interrupt kept from running says so).
"""

from __future__ import annotations

import heapq
import logging
import queue
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from ._results import StageResult
from ._services import LockBusy, RunServices

if TYPE_CHECKING:
    from ._lifecycle import Lifecycle

__all__ = ["Scheduler"]

log = logging.getLogger("pipekit.runner")

IDLE_WAKE_S = 0.5
"""The longest the loop sleeps without looking at its state."""

_WAKE: Any = object()
"""Put in the queue of ended futures to wake the loop (a signal came)."""


class Scheduler:
    def __init__(self, services: RunServices, make_lifecycle: Callable[[], Lifecycle]) -> None:
        self.services = services
        self.make_lifecycle = make_lifecycle
        """Called when the first stage goes to the pool: a run that skips
        every stage on the spot never makes (nor imports) the lifecycle."""
        self.lifecycle: Lifecycle | None = None
        self.stages = services.pipeline.stages
        self.jobs = max(1, services.options.jobs)
        self.results: dict[str, StageResult] = {}
        self.waiting_on: dict[str, set[str]] = {
            name: set(stage.deps) for name, stage in self.stages.items()
        }
        self.dependents: dict[str, list[str]] = {name: [] for name in self.stages}
        for stage in self.stages.values():
            for upstream in stage.deps:
                self.dependents[upstream].append(stage.name)
        self.ready: list[tuple[int, str]] = [
            (self.stages[name].index, name) for name, deps in self.waiting_on.items() if not deps
        ]
        heapq.heapify(self.ready)
        self.lock_waits: list[tuple[float, int, str]] = []  # (next try, index, name)
        self.lock_wait_started: dict[str, float] = {}
        self.lock_tries: dict[str, int] = {}
        self.waited_past_timeout: set[str] = set()
        self.lock_timed_out: list[str] = []
        self.ended: queue.SimpleQueue[Future[Any]] = queue.SimpleQueue()
        self.working: dict[Future[Any], str] = {}  # in the pool
        self.committing: dict[Future[Any], str] = {}  # handed to the committer
        self.interrupted = False
        self.signal_pending = False
        self.looping = False
        """True while :meth:`run` loops: a signal is then :meth:`signalled`."""
        self.pool: ThreadPoolExecutor | None = None

    # -- the loop ----------------------------------------------------------------

    def run(self) -> dict[str, StageResult]:
        self.looping = True
        try:
            while True:
                try:
                    if self.signal_pending:
                        self.interrupt()
                    if not self.step():
                        break
                except KeyboardInterrupt:  # (a caller's own, not a signal's)
                    self.interrupt()
        finally:
            self.looping = False
            if self.pool is not None:
                self.pool.shutdown(wait=True, cancel_futures=True)
        for name in self.stages:
            if name not in self.results:  # kept from running by a failure or an interrupt
                self.results[name] = self.services.not_run(name)
        return self.results

    def step(self) -> bool:
        """One turn of the loop; False once there is nothing left to do."""
        if not self.stopping():
            self.start_ready()
            self.retry_lock_waits()
        if self.services.journal is not None:
            self.services.journal.flush_if_due()
        if not self.working and not self.committing:
            if self.stopping() or (not self.ready and not self.lock_waits):
                return False
            if not self.ready:  # only lock waits: sleep until the next try
                time.sleep(max(0.0, self.lock_waits[0][0] - time.monotonic()))
            return True
        self.wait_for_events()
        return True

    def stopping(self) -> bool:
        return self.interrupted or self.signal_pending or self.services.stopping()

    def signalled(self) -> None:
        """SIGINT/SIGTERM (called by the signal handler, in the main thread,
        between two bytecodes of whatever it was doing): stop at the loop's
        next turn, or, once the loop is over, have the run count as
        interrupted. Takes no lock (``SimpleQueue.put`` is reentrant) and
        raises nothing into the work it lands in."""
        self.signal_pending = True
        if self.looping:
            self.ended.put(_WAKE)

    def interrupt(self) -> None:
        if not self.interrupted:
            log.warning("interrupted: stopping the stages in hand")
        self.interrupted = True
        self.services.cancel.set()

    # -- starting ----------------------------------------------------------------

    def start_ready(self) -> None:
        """Skip what a cheap decision finds up to date; hand the rest to
        the pool while it has room (its threads plus as many queued, so
        that a thread that ends a stage starts the next at once)."""
        evaluator = self.services.evaluator
        options = self.services.options
        while self.ready and len(self.working) < 2 * self.jobs and not self.signal_pending:
            _, name = heapq.heappop(self.ready)
            if name in self.results:
                continue
            stage = self.stages[name]
            if not options.forced(name):
                started = time.perf_counter()
                decision = evaluator.decide_cheaply(stage)
                if decision is not None and not decision.run:
                    duration = time.perf_counter() - started
                    self.finish(name, self.services.skipped(stage, decision, duration))
                    continue
            self.submit(name)

    def submit(self, name: str) -> None:
        if self.lifecycle is None:
            self.lifecycle = self.make_lifecycle()
        if self.pool is None:
            self.pool = ThreadPoolExecutor(self.jobs, thread_name_prefix="pipekit-stage")
        self.track(self.pool.submit(self.lifecycle.run_stage, name), name, self.working)

    def track(self, future: Future[Any], name: str, table: dict[Future[Any], str]) -> None:
        """Keep ``future`` in ``table`` until handled; it goes to the queue
        of ended ones when it ends."""
        table[future] = name
        future.add_done_callback(self.ended.put)

    def retry_lock_waits(self) -> None:
        now = time.monotonic()
        while self.lock_waits and self.lock_waits[0][0] <= now:
            if len(self.working) >= 2 * self.jobs:
                return
            _, _, name = heapq.heappop(self.lock_waits)
            self.submit(name)

    # -- events ------------------------------------------------------------------

    def wait_for_events(self) -> None:
        """Handle what ended: one future, waited for, then every other that
        ended meanwhile. When nothing came in time, look at every future in
        hand (one an interrupt made the loop drop is handled then)."""
        timeout = IDLE_WAKE_S
        if self.lock_waits and not self.stopping():
            timeout = min(timeout, max(0.0, self.lock_waits[0][0] - time.monotonic()))
        journal = self.services.journal
        if journal is not None and (due := journal.due_in()) is not None:
            timeout = min(timeout, due)  # the run record's lines go out in time
        try:
            future = self.ended.get(timeout=timeout)
        except queue.Empty:
            for future in [*self.working, *self.committing]:
                if future.done():
                    self.handle(future)
            return
        while True:
            if future is not _WAKE:
                self.handle(future)
            try:
                future = self.ended.get_nowait()
            except queue.Empty:
                return

    def handle(self, future: Future[Any]) -> None:
        """A future that is done: a stage's work or its commit. Handled
        before it is forgotten, so that an interrupt in between only makes
        it handled again."""
        name = self.working.get(future) or self.committing.get(future)
        if name is None:  # handled already
            return
        outcome = future.result()  # run_stage and the commit never raise
        if isinstance(outcome, Future):
            self.track(outcome, name, self.committing)
        elif isinstance(outcome, LockBusy):
            self.lock_busy(name, outcome)
        else:
            self.finish(name, outcome)
        self.working.pop(future, None)
        self.committing.pop(future, None)

    def lock_busy(self, name: str, busy: LockBusy) -> None:
        """Another runner holds the stage's lock: try again soon. Past
        ``--lock-timeout`` the stage fails, unless its holder is alive and
        renewing its lease: work in progress is waited for."""
        now = time.monotonic()
        since = self.lock_wait_started.setdefault(name, now)
        limit = self.services.options.lock_timeout
        if limit is not None and now - since >= limit:
            if busy.holder_state != "alive":
                self.lock_timed_out.append(name)
                result = lock_failure(name, limit, busy)
                self.services.observe_end(self.stages[name], result)
                self.finish(name, result)
                return
            if name not in self.waited_past_timeout:
                self.waited_past_timeout.add(name)
                log.warning(
                    "stage %s: its lock is still held by %s, alive and at work: waiting on",
                    name,
                    busy.holder or "another runner",
                )
        tries = self.lock_tries[name] = self.lock_tries.get(name, 0) + 1
        delay = min(0.25, 0.005 * 2 ** min(tries, 6))
        heapq.heappush(self.lock_waits, (now + delay, self.stages[name].index, name))

    def finish(self, name: str, result: StageResult) -> None:
        """A stage's result: its dependents become ready, or, when it
        failed, are skipped (and the run stops, without --keep-going)."""
        if name in self.results:
            return
        self.record(name, result)
        services = self.services
        if result.status != "failed":
            for child in self.dependents[name]:
                waiting = self.waiting_on[child]
                waiting.discard(name)
                if not waiting and child not in self.results:
                    heapq.heappush(self.ready, (self.stages[child].index, child))
            return
        if not services.options.keep_going:
            services.halt.set()
        for child in sorted(services.pipeline.downstream_of([name]) - {name}):
            if child not in self.results:
                skipped = StageResult(
                    child,
                    "skipped",
                    reason=f"not run: upstream stage {name!r} failed",
                    reason_code="upstream_failed",
                )
                services.observe_end(self.stages[child], skipped)
                self.record(child, skipped)

    def record(self, name: str, result: StageResult) -> None:
        services = self.services
        result.ended_at = now = time.time()
        began = services.started.get(name)
        if began is not None:
            result.started_at, result.slot = began
        elif result.duration_s:  # decided on the spot
            result.started_at = now - result.duration_s
        self.results[name] = result
        if services.journal is not None:
            services.journal.add(result)
        if services.on_result is not None:
            services.on_result(result)


def lock_failure(name: str, limit: float, busy: LockBusy) -> StageResult:
    who = f" (held by {busy.holder}" if busy.holder else " (held by another runner"
    who += f", {busy.holder_state})" if busy.holder_state == "gone" else ")"
    hint = (
        "its holder is gone but its lease has not expired yet"
        if busy.holder_state == "gone"
        else "raise --lock-timeout or wait for the other run"
    )
    return StageResult(
        name,
        "failed",
        reason=f"could not take the stage's lock within {limit:g}s{who}; {hint}",
        error="lock timeout",
        reason_code="lock_timeout",
    )
