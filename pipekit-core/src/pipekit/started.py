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
import os
import selectors
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["Attempt", "Watcher", "signals_held"]


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
        "slot",
        "st",
        "t0",
        "tmps",
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
        self.guard: Any = None
        self.deadline: float | None = None
        self.fd = -1

    @contextlib.contextmanager
    def guarded(self) -> Iterator[None]:
        """The body runs under this attempt's network guard and slot."""
        from . import netns

        with netns.slot(self.slot):
            if self.guard is None:
                yield
                return
            from .netguard import entered

            with entered(self.guard):
                yield


class Watcher:
    """The started attempts, their descriptors in one selector, their
    deadlines, their slots, and the wake-up pipe of the scheduling thread."""

    def __init__(self, slots: int) -> None:
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self.attempts: dict[str, Attempt] = {}
        self._deadlines: list[tuple[float, str]] = []
        self._free = list(range(slots - 1, -1, -1))

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
        self._sel.register(a.fd, selectors.EVENT_READ, a)
        if a.deadline is not None:
            heapq.heappush(self._deadlines, (a.deadline, a.st.name))

    def update(self, a: Attempt) -> None:
        """After a ``poll`` that did not end it: follow a changed descriptor."""
        fd = a.handle.fileno()
        if fd != a.fd:
            self._sel.unregister(a.fd)
            a.fd = fd
            self._sel.register(fd, selectors.EVENT_READ, a)

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
        self._sel.close()
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
