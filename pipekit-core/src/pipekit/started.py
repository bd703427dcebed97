"""The runner's side of stages started with :meth:`pipekit.Stage.start`.

Such a stage costs the runner no thread: its scheduling thread takes the
lock, decides, calls ``start``, and then waits on every started stage's
descriptor at once (one ``epoll`` set, as make waits for its children),
together with a wake-up pipe that the committer and the worker threads
write to when they hand it an event. Each started stage holds a **slot**
(``0 .. jobs-1``) for as long as it runs: its commands get the slot's
network namespace (see :func:`pipekit.netns.slot`), so that a namespace's
counters tell what its one command tried.
"""

from __future__ import annotations

import contextlib
import heapq
import logging
import os
import time
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .results import Decision, StageResult

if TYPE_CHECKING:  # pragma: no cover
    from .runner import Runner

log = logging.getLogger("pipekit.runner")

__all__ = ["Attempt", "StartedStages", "Watcher", "signals_held"]


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """SIGINT and SIGTERM that arrive during the body take effect after it.

    The scheduling thread commits started stages itself; a commit cut by
    the ``KeyboardInterrupt`` those signals raise would leave its stages'
    futures unresolved, or be taken for a failed commit. Held, the signal
    is raised again right after the commit, and the run stops as usual.
    Only the main thread can change handlers: elsewhere the body runs as
    it is."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    wanted = (signal.SIGINT, signal.SIGTERM)
    before = {s: signal.getsignal(s) for s in wanted}
    if any(h is None for h in before.values()):  # set outside Python: leave them be
        yield
        return
    got: list[int] = []

    def hold(signum: int, _frame: Any) -> None:
        got.append(signum)

    for s in wanted:
        signal.signal(s, hold)
    try:
        yield
    finally:
        for s, h in before.items():
            signal.signal(s, h)
        for signum in got:
            signal.raise_signal(signum)


class Attempt:
    """One started attempt of a stage: what the runner needs to finish it."""

    __slots__ = (
        "ctx",
        "d",
        "deadline",
        "fd",
        "guard",
        "handle",
        "lease",
        "prepared_at",
        "slot",
        "st",
        "t0",
        "tmps",
        "withdrawn",
    )

    def __init__(
        self,
        st: Any,
        d: Any,
        lease: Any,
        t0: float,
        tmps: list[Path],
        ctx: Any,
        slot: int,
    ) -> None:
        self.st = st
        self.d = d
        self.lease = lease
        self.t0 = t0
        self.tmps = tmps
        self.ctx = ctx
        self.slot = slot
        self.handle: Any = None
        self.prepared_at = time.monotonic()
        """When it was ready to start (prepared): the wait for a slot since
        is not part of its duration."""
        self.guard: Any = None
        self.deadline: float | None = None
        self.fd = -1
        self.withdrawn = False
        """Queued behind another (see :meth:`Watcher.queue`) and withdrawn."""

    def guarded(self) -> _Guarded:
        """The body runs under this attempt's network guard and slot."""
        return _Guarded(self)


class _Guarded:
    """:meth:`Attempt.guarded`: :func:`pipekit.netns.slot` and
    :func:`pipekit.netguard.entered` in one plain context manager (it is
    entered several times per stage by the scheduling thread)."""

    __slots__ = ("a", "slot", "token")
    _mods: Any = None  # (netguard, netns): imported on first use, not with this module

    def __init__(self, a: Attempt) -> None:
        self.a = a

    @classmethod
    def _modules(cls) -> Any:
        # Looked up once: an import statement here, run 9 times per stage,
        # was 20 ms of a 1,000-stage run's scheduling thread.
        if cls._mods is None:
            from . import netguard, netns

            cls._mods = (netguard, netns)
        return cls._mods

    def __enter__(self) -> None:
        netguard, netns = self._mods or self._modules()
        self.slot = netns.set_slot(self.a.slot)
        self.token = None if self.a.guard is None else netguard.enter(self.a.guard)

    def __exit__(self, *exc: object) -> None:
        netguard, netns = self._mods or self._modules()
        if self.token is not None:
            netguard.leave(self.token)
        netns.set_slot(self.slot)


class Watcher:
    """The started attempts, their descriptors in one selector, their
    deadlines, their slots, and the wake-up pipe of the scheduling thread."""

    def __init__(self, slots: int) -> None:
        self._wake_r, self._wake_w = os.pipe()  # not inherited by children (PEP 446)
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._selector: Any = None
        self._read: int  # selectors.EVENT_READ, set with the selector
        self.attempts: dict[str, Attempt] = {}
        self._deadlines: list[tuple[float, str]] = []
        self._free = list(range(slots - 1, -1, -1))
        self.queued: dict[int, Attempt] = {}
        """By slot: an attempt queued behind that slot's running one
        (:meth:`pipekit.Stage.start_after`). It holds no slot and is not
        watched: its processor starts it when the running one ends well,
        and :meth:`promote` then gives it the slot."""

    @property
    def _sel(self) -> Any:
        """The selector, made when first needed: a run that starts nothing
        and waits for nothing (a no-op run) does not import ``selectors``."""
        if self._selector is None:
            import selectors

            self._read = selectors.EVENT_READ
            self._selector = selectors.DefaultSelector()
            self._selector.register(self._wake_r, self._read, None)
        return self._selector

    def wake(self) -> None:
        """From any thread: make :meth:`wait` return (an event is queued)."""
        try:
            os.write(self._wake_w, b"\0")
        except (BlockingIOError, OSError):
            pass  # the pipe is full (a wake-up is pending) or closed (the run is over)

    def free_slot(self) -> int | None:
        return self._free[-1] if self._free else None

    def add(self, a: Attempt) -> None:
        self._free.remove(a.slot)
        self.attempts[a.st.name] = a
        a.fd = a.handle.fileno()
        self._sel.register(a.fd, self._read, a)
        if a.deadline is not None:
            heapq.heappush(self._deadlines, (a.deadline, a.st.name))

    def queue(self, a: Attempt) -> None:
        self.queued[a.slot] = a

    def promote(self, slot: int) -> Attempt | None:
        """The attempt queued behind ``slot``'s (which has just ended), now
        running in it, or None."""
        a = self.queued.pop(slot, None)
        if a is not None:
            self.add(a)
        return a

    def update(self, a: Attempt) -> None:
        """After a ``poll`` that did not end it: follow a changed descriptor."""
        fd = a.handle.fileno()
        if fd != a.fd:
            self._sel.unregister(a.fd)
            a.fd = fd
            self._sel.register(fd, self._read, a)

    def remove(self, a: Attempt) -> None:
        if self.attempts.pop(a.st.name, None) is None:
            return
        try:
            self._sel.unregister(a.fd)
        except (KeyError, ValueError):
            pass
        self._free.append(a.slot)

    def wait(self, timeout: float | None) -> list[Attempt]:
        """The attempts whose descriptor is ready (empty on a wake-up or
        when ``timeout`` passed)."""
        ready = []
        for key, _ in self._sel.select(timeout):
            if key.data is None:
                try:
                    while os.read(self._wake_r, 4096):
                        pass
                except BlockingIOError:
                    pass
            else:
                ready.append(key.data)
        return ready

    def next_deadline(self) -> float | None:
        while self._deadlines and self._deadlines[0][1] not in self.attempts:
            heapq.heappop(self._deadlines)
        return self._deadlines[0][0] if self._deadlines else None

    def expired(self, now: float) -> list[Attempt]:
        out = []
        while self._deadlines and self._deadlines[0][0] <= now:
            _, name = heapq.heappop(self._deadlines)
            a = self.attempts.get(name)
            if a is not None and a.deadline is not None and a.deadline <= now:
                out.append(a)
        return out

    def close(self) -> None:
        if self._selector is not None:
            self._selector.close()
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass


class StartedStages:
    """The runner's side of one run's started stages: which stages are
    started, and how one is started, polled, killed and ended. The
    scheduling loop (``Runner._schedule``) calls these; they use the
    runner's lock, decision, commit and result methods."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self._known: dict[str, bool] = {}

    def startable(self, st: Any) -> bool:
        """Whether the scheduling thread starts this stage itself: its
        processor implements :meth:`pipekit.Stage.start`, and the stage has
        one attempt and no worker process (retries and killable workers go
        through :meth:`_run_locked` in a worker thread)."""
        known = self._known.get(st.name)
        if known is None:
            from .execute import needs_worker
            from .stage import Stage

            proc = st.processor
            known = (
                isinstance(proc, Stage)
                and type(proc).start is not Stage.start
                and st.config.retry.attempts == 1
                and not needs_worker(st)
            )
            self._known[st.name] = known
        return known

    def start(self, name: str, deadline: float | None, slot: int) -> Any:
        """Scheduling thread: lock, decide and start stage ``name``. An
        :class:`~pipekit.started.Attempt` to watch, a :class:`StageResult`
        (skipped, failed, not run), a deferral (its lock is held
        elsewhere), or the future of a worker thread that runs it (its
        ``start`` returned None)."""
        outcome = self.prepare(name, deadline)
        return self.launch(outcome, slot) if isinstance(outcome, Attempt) else outcome

    def prepare(self, name: str, deadline: float | None) -> Any:
        """Scheduling thread: lock and decide stage ``name`` and make its
        context, so that :meth:`launch` only has to start it once a slot
        is free: an :class:`Attempt` holding the stage's lock (released by
        :meth:`launch` or :meth:`drop`), or what :meth:`start` returns for
        a stage that is not to start."""
        if self.runner._halt.is_set() or self.runner.cancel.is_set():
            return self.runner._not_run(name, self.runner.cancel.is_set())
        st = self.runner.pipeline.stages[name]
        t0 = time.perf_counter()
        try:
            lease, d, outcome = self.runner._locked_decision(st, deadline, t0)
            if lease is None:
                return outcome
            try:
                self.runner.inflight.note({p.parent for p in st.output_paths})
                tmps, ctx = self.runner._context(st, 1, d, lease, False)
            except BaseException:
                lease.release()
                raise
            return Attempt(st, d, lease, t0, tmps, ctx, -1)
        except Exception as exc:
            return self.runner._unexpected(name, t0, exc)

    def drop(self, a: Attempt) -> None:
        """A prepared attempt that will not start (the run stops)."""
        a.lease.release()

    def queue_behind(self, a: Attempt, running: Attempt) -> Any:
        """Scheduling thread: hand a prepared attempt to the processor of
        ``running`` to start the moment that one ends well
        (:meth:`pipekit.Stage.start_after`), in its slot. ``a`` queued (to
        watch once :meth:`Watcher.promote` gives it the slot), None if the
        processor declined (``a`` is still prepared), or a failed
        :class:`StageResult` (its lock released). ``running`` is work of
        the same processor (the caller picks it)."""
        from .execute import start_in_process
        from .stage import Stage  # (not on the path of a run that queues nothing)

        st = a.st
        if a.ctx.timeout is not None or type(st.processor).start_after is Stage.start_after:
            return None
        a.slot = running.slot
        try:
            handle = start_in_process(st, a, self.runner.network_policy(st), behind=running.handle)
        except Exception as exc:
            self.runner._discard_attempt(exc, a.ctx, a.tmps)
            a.lease.release()
            return self.runner._attempts_failed(st, a.d, a.t0, 1, exc, dict(a.ctx.info))
        if handle is None:
            a.slot = -1
            a.guard = None
            return None
        a.handle = handle
        self.runner.observers.call("on_stage_start", run=self.runner.info, stage=st.config)
        return a

    def launch(self, a: Attempt, slot: int) -> Any:
        """Scheduling thread: start a prepared attempt in ``slot``; what
        :meth:`start` returns."""
        from .execute import start_in_process

        st, d, lease, tmps, ctx = a.st, a.d, a.lease, a.tmps, a.ctx
        if self.runner._halt.is_set() or self.runner.cancel.is_set():
            lease.release()
            return self.runner._not_run(st.name, self.runner.cancel.is_set())
        kept = False
        a.t0 += time.monotonic() - a.prepared_at  # the wait for a slot is not its time
        t0 = a.t0
        try:
            self.runner.observers.call("on_stage_start", run=self.runner.info, stage=st.config)
            a.slot = slot
            try:
                a.handle = start_in_process(st, a, self.runner.network_policy(st))
            except Exception as exc:
                self.runner._discard_attempt(exc, ctx, tmps)
                return self.runner._attempts_failed(st, d, t0, 1, exc, dict(ctx.info))
            kept = True
            if a.handle is None:  # the processor declined: run() in a worker thread
                return self.runner._executor().submit(self.run_declined, st, d, lease, t0)
            if ctx.timeout is not None:
                a.deadline = time.monotonic() + ctx.timeout
            return a
        except Exception as exc:
            return self.runner._unexpected(st.name, t0, exc)
        finally:
            if not kept:
                lease.release()

    def run_declined(self, st: Any, d: Decision, lease: Any, t0: float) -> Any:
        """Worker thread: a stage whose ``start`` returned None, run with
        the lease its start took."""
        self.runner._handed.done = False
        handed_off = False
        try:
            outcome = self.runner._run_locked(st, d, lease, t0, announced=True)
            handed_off = isinstance(outcome, Future)
            if isinstance(outcome, StageResult):
                self.runner._halt_on(outcome)
            return outcome
        except Exception as exc:
            return self.runner._unexpected(st.name, t0, exc)
        finally:
            if not handed_off:
                lease.release()
            if not self.runner._handed.done:
                self.runner._stop_working()

    def poll(self, a: Any) -> tuple[bool, BaseException | None]:
        """Scheduling thread: ``poll`` a started attempt whose descriptor
        is ready: ``(ended, error)``; then :meth:`finish` and :meth:`end`
        one that ended."""
        try:
            with a.guarded():
                return a.handle.poll(), None
        except Exception as exc:  # its end is this error: stop what may still run
            self.kill(a, "cancelled")
            return True, exc

    def kill(self, a: Any, reason: str) -> None:
        try:
            with a.guarded():
                a.handle.kill(reason)
        except Exception as exc:
            log.warning("stage %s: could not stop its work: %s", a.st.name, exc)

    def finish(self, a: Any) -> BaseException | None:
        """Scheduling thread: the processor's ``finish()`` of an attempt
        that ended: how it failed, or None."""
        from .execute import finish_started

        try:
            finish_started(a)
        except Exception as exc:
            return exc
        return None

    def end(self, a: Any, error: BaseException | None, batch: list[Any]) -> Any:
        """Scheduling thread: end an attempt that ended and was finished
        (``error``: how it or its ``finish()`` failed; its slot and its
        place among the stages at work are given back already): a failed
        :class:`StageResult`, or the future of its commit, whose job went
        to ``batch``."""
        st, ctx = a.st, a.ctx
        try:
            if error is not None:
                raise error
            self.runner._check_attempt(st, a.tmps, a.lease)
        except Exception as exc:
            self.runner._discard_attempt(exc, ctx, a.tmps)
            try:
                return self.runner._attempts_failed(st, a.d, a.t0, 1, exc, dict(ctx.info))
            finally:
                a.lease.release()
        used = ctx.checkpoint is None or ctx.checkpoint.used
        return self.runner._to_committer(
            st, a.d, a.lease, a.t0, 1, a.tmps, dict(ctx.info), {}, batch, checkpointed=used
        )
