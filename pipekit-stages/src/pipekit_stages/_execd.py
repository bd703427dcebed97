"""A command starter: runs the shell stage's commands, one at a time, for
the runner that started it (see :mod:`pipekit_stages.starters`).

Started with ``python -I -S`` (standard library only), in the network
namespace its commands must run in. It reads requests on stdin and writes
one reply per command on stdout, each a 4-byte length and a ``marshal``
payload (both ends are this package). A request is
``("run", cwd, env, tries)``, ``env`` None for the one of the request
before, ``tries`` ``(path, argv, file_actions, stdout_to_stderr)`` started in
turn until one starts (``os.posix_spawn`` file actions, after the
command's stdout is pointed at our stderr if asked and its stderr at a
pipe read here); or ``("kill",)`` for the running command. The reply is ``(pid,
returncode, tried, stderr_tail, error)``: ``pid`` None and ``error`` a
message when no try started. The command leads a new session, has
SIGPIPE, SIGXFSZ, SIGINT and SIGTERM at their defaults, and its stderr is
read here as it comes (the last :data:`KEEP` bytes are kept), so that a
command that fills the pipe does not stall. End of stdin: the runner is
gone, so this ends too (a running command goes on, as it would have).
"""

from __future__ import annotations

import marshal
import os
import select
import signal
import struct

KEEP = 1 << 16
_LEN = struct.Struct("<I")
_RESET = tuple(
    getattr(signal, n)
    for n in ("SIGPIPE", "SIGXFZ", "SIGXFSZ", "SIGINT", "SIGTERM")
    if hasattr(signal, n)
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


def _wait(pid: int, err_r: int, rfd: int) -> tuple[int, bytes]:
    """Read the command's stderr as it comes, then wait for its end (a
    pidfd says when), killing its group on a kill request: ``(wait status,
    the end of its stderr)``. _Gone (the runner is gone) leaves it be."""
    tail = bytearray()
    poller = select.poll()
    poller.register(err_r, select.POLLIN)
    poller.register(rfd, select.POLLIN)
    pidfd = -1
    while True:
        for fd, _ in poller.poll():
            if fd == rfd:
                if _request(rfd)[0] == "kill":
                    try:
                        os.killpg(pid, signal.SIGKILL)
                    except (ProcessLookupError, PermissionError):
                        pass
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


def _serve(rfd: int, wfd: int) -> None:
    env: dict = {}  # type: ignore[type-arg]  # the first request brings it
    cwd = os.getcwd()
    while True:
        req = _request(rfd)
        if req[0] != "run":
            continue  # a kill for a command that has ended
        _, folder, new_env, tries = req
        if new_env is not None:
            env = new_env
        if folder != cwd:
            os.chdir(folder)
            cwd = folder
        err_r, err_w = os.pipe()
        try:
            pid, tried, error = _start(tries, env, err_w)
        finally:
            os.close(err_w)
        if pid is None:
            os.close(err_r)
            _reply(wfd, (None, None, tried, b"", error))
            continue
        _current[0] = pid
        status, tail = _wait(pid, err_r, rfd)
        _current[0] = 0
        _reply(wfd, (pid, os.waitstatus_to_exitcode(status), tried, tail, None))


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the runner stops its commands itself
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGHUP, _stop)
    try:
        _serve(0, 1)
    except (_Gone, BrokenPipeError):
        pass


if __name__ == "__main__":
    main()
