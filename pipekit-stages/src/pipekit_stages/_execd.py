"""A command starter: runs the shell stage's commands, one at a time, for
the runner that started it (see :mod:`pipekit_stages.starters`).

Started with ``python -I -S`` (standard library only), in the network
namespace its commands must run in. It reads requests on stdin and writes
one reply per command on stdout, each a 4-byte length and a ``marshal``
payload (both ends are this package). Requests:

- ``("run", id, cwd, env, tries, after, count)``: run a command once the
  ones asked for before it have ended. ``env`` is None for the one of the
  request before; ``tries`` are ``(path, argv, file_actions,
  stdout_to_stderr)``, started in turn until one starts (``os.posix_spawn``
  file actions, after the command's stdout is pointed at our stderr if
  asked and its stderr at a pipe read here). ``after``: start it only if
  the command before it ended well (exit status 0, not killed), so that the
  runner can queue a stage's command behind the running one and nothing
  waits for the runner in between; otherwise it is not started. ``count``:
  read the namespace's counters (``snmp``, ``snmp6``) just before it starts
  and after it ends.
- ``("kill", id)``: SIGKILL to that command's process group if it runs;
  not started if it waits.
- ``("drop", id)``: not started if it still waits; nothing if it runs.

A reply is ``(id, pid, returncode, tried, stderr_tail, error, counts)``:
``pid`` None and ``error`` a message when no try started, ``pid`` and
``error`` None when it was not started (dropped, or the one before it
failed); ``counts`` ``(snmp, snmp6)`` before and after (both empty when
they were equal), or None. Commands
run in the order they were asked for; the reply for one that is not started
on a kill or drop comes at once. A command leads a new session, has SIGPIPE,
SIGXFSZ, SIGINT and SIGTERM at their defaults, and its stderr is read here
as it comes (the last :data:`KEEP` bytes are kept), so that a command that
fills the pipe does not stall. End of stdin: the runner is gone, so this
ends too (a running command goes on, as it would have).
"""

from __future__ import annotations

import _signal as signal  # the C module: ``signal`` imports enum, 5 ms of this process's start
import marshal
import os
import select
import struct

KEEP = 1 << 16
_LEN = struct.Struct("<I")
_RESET = tuple(
    getattr(signal, n) for n in ("SIGPIPE", "SIGXFSZ", "SIGINT", "SIGTERM") if hasattr(signal, n)
)


class _Gone(Exception):
    """The runner closed its end."""


def _read_exact(fd: int, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = os.read(fd, n - len(out))
        if not chunk:
            raise _Gone
        out += chunk
    return out


def _request(fd: int) -> tuple:  # type: ignore[type-arg]  # marshal's
    (n,) = _LEN.unpack(_read_exact(fd, 4))
    return marshal.loads(_read_exact(fd, n))


def _reply(fd: int, value: tuple) -> None:  # type: ignore[type-arg]
    data = marshal.dumps(value)
    data = _LEN.pack(len(data)) + data
    while data:
        data = data[os.write(fd, data) :]


def _start(
    tries: list,  # type: ignore[type-arg]
    env: dict,  # type: ignore[type-arg]
    err_w: int,
) -> tuple[int | None, int, str | None]:
    error = "no command"
    for tried, (path, argv, actions, stdout_to_stderr) in enumerate(tries, 1):
        head = [(os.POSIX_SPAWN_DUP2, 2, 1)] if stdout_to_stderr else []
        head.append((os.POSIX_SPAWN_DUP2, err_w, 2))
        try:
            pid = os.posix_spawn(
                path,
                argv,
                env,
                file_actions=head + list(actions),
                setsid=True,
                setsigdef=_RESET,
            )
        except OSError as exc:
            error = f"{exc.strerror or exc}: {path}"
            continue
        return pid, tried, None
    return None, len(tries), error


class _Counters:
    """This namespace's ``snmp`` and ``snmp6`` files, opened once and read
    from offset 0 each time; the reading after a command that left no
    process behind is the next one's reading before (nothing ran between)."""

    def __init__(self) -> None:
        self.fds: list[int] = []
        for name in ("snmp", "snmp6"):
            try:
                self.fds.append(os.open(f"/proc/self/net/{name}", os.O_RDONLY))
            except OSError:
                self.fds.append(-1)
        self.last: tuple[bytes, bytes] | None = None

    def read(self) -> tuple[bytes, bytes]:
        out = []
        for fd in self.fds:
            chunks = []
            offset = 0
            try:
                while fd >= 0:
                    chunk = os.pread(fd, 65536, offset)
                    chunks.append(chunk)
                    offset += len(chunk)
                    if len(chunk) < 65536:
                        break
            except OSError:
                chunks = []
            out.append(b"".join(chunks))
        return out[0], out[1]

    def before(self) -> tuple[bytes, bytes]:
        last, self.last = self.last, None
        return last if last is not None else self.read()

    def after(self, pid: int) -> tuple[bytes, bytes]:
        reading = self.read()
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            self.last = reading  # nothing of it is left
        except OSError:
            pass
        return reading


_SAME = ((b"", b""), (b"", b""))
"""``counts`` of a command during which no counter changed."""

_current = [0]  # the running command's pid (its process group), 0 when none


def _stop(signum: int, _frame: object) -> None:
    """SIGTERM or SIGHUP (sent to the runner's process group, say): the
    running command's group goes too, as the runner would have stopped it."""
    if _current[0]:
        try:
            os.killpg(_current[0], signal.SIGKILL)
        except OSError:
            pass
    os._exit(128 + signum)


class _Server:
    def __init__(self, rfd: int, wfd: int) -> None:
        self.rfd = rfd
        self.wfd = wfd
        self.env: dict = {}  # type: ignore[type-arg]  # the first request brings it
        self.cwd = os.getcwd()
        self.waiting: list[tuple] = []  # type: ignore[type-arg]  # (id, cwd, env, tries, after, count)
        self.running_id: int | None = None
        self.killed = False  # the running command was killed on request
        self.last_ok = True  # the command before ended well
        self.counters: _Counters | None = None

    def take(self, req: tuple) -> None:  # type: ignore[type-arg]
        """A request, read while a command may run."""
        kind = req[0]
        if kind == "run":
            _, rid, folder, env, tries, after, count = req
            if env is None:
                env = self.env
            self.env = env
            self.waiting.append((rid, folder, env, tries, after, count))
        elif kind in ("kill", "drop"):
            target = req[1]
            if target == self.running_id:
                if kind == "kill" and _current[0]:
                    self.killed = True
                    try:
                        os.killpg(_current[0], signal.SIGKILL)
                    except (ProcessLookupError, PermissionError):
                        pass
                return
            for i, waiting in enumerate(self.waiting):
                if waiting[0] == target:  # not started, and said so now
                    del self.waiting[i]
                    _reply(self.wfd, (target, None, None, 0, b"", None, None))
                    break

    def serve(self) -> None:
        while True:
            if not self.waiting:
                self.take(_request(self.rfd))
                continue
            rid, folder, env, tries, after, count = self.waiting.pop(0)
            if after and not self.last_ok:
                _reply(self.wfd, (rid, None, None, 0, b"", None, None))
                continue
            self.run(rid, folder, env, tries, count)

    def run(self, rid: int, folder: str, env: dict, tries: list, count: bool) -> None:  # type: ignore[type-arg]
        if folder != self.cwd:
            os.chdir(folder)
            self.cwd = folder
        before = None
        if count:
            if self.counters is None:
                self.counters = _Counters()
            before = self.counters.before()
        err_r, err_w = os.pipe()
        try:
            pid, tried, error = _start(tries, env, err_w)
        finally:
            os.close(err_w)
        if pid is None:
            os.close(err_r)
            self.last_ok = False
            _reply(self.wfd, (rid, None, None, tried, b"", error, None))
            return
        _current[0] = pid
        self.running_id = rid
        self.killed = False
        try:
            status, tail = self.wait(pid, err_r)
        finally:
            _current[0] = 0
            self.running_id = None
        code = os.waitstatus_to_exitcode(status)
        self.last_ok = code == 0 and not self.killed
        counts = None
        if self.counters is not None and before is not None:
            after = self.counters.after(pid)
            # Unchanged (the usual case): nothing to send but that.
            counts = (before, after) if after != before else _SAME
        _reply(self.wfd, (rid, pid, code, tried, tail, None, counts))

    def wait(self, pid: int, err_r: int) -> tuple[int, bytes]:
        """Read the command's stderr as it comes, then wait for its end (a
        pidfd says when), taking requests meanwhile: ``(wait status, the end
        of its stderr)``. _Gone (the runner is gone) leaves it be."""
        tail = bytearray()
        poller = select.poll()
        poller.register(err_r, select.POLLIN)
        poller.register(self.rfd, select.POLLIN)
        pidfd = -1
        while True:
            for fd, _ in poller.poll():
                if fd == self.rfd:
                    self.take(_request(self.rfd))
                elif pidfd < 0:  # stderr
                    chunk = os.read(err_r, 65536)
                    if chunk:
                        tail += chunk
                        if len(tail) > 2 * KEEP:
                            del tail[:-KEEP]
                        continue
                    # stderr closed: the command has ended, or nearly; a pidfd says when
                    poller.unregister(err_r)
                    os.close(err_r)
                    try:
                        pidfd = os.pidfd_open(pid)
                    except (AttributeError, OSError):
                        return os.waitpid(pid, 0)[1], bytes(tail[-KEEP:])
                    poller.register(pidfd, select.POLLIN)
                else:
                    os.close(pidfd)
                    return os.waitpid(pid, 0)[1], bytes(tail[-KEEP:])


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the runner stops its commands itself
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGHUP, _stop)
    try:
        _Server(0, 1).serve()
    except (_Gone, BrokenPipeError):
        # Nothing is buffered (replies go out with os.write): no need for
        # the interpreter's teardown, a few ms of every run's end.
        os._exit(0)


if __name__ == "__main__":
    main()
