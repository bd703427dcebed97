"""``shell``: run a command template over the stage's inputs and outputs.

The command runs with ``/bin/sh -c`` in the pipeline's folder; a simple
command (words and ``<``, ``>``, ``>>`` redirections only) is started
without the shell, to the same effect (see :mod:`.simple_command`). Placeholders:
``{inputs}`` and ``{outputs}`` (all paths, quoted, space-separated),
``{inputs[0]}``, ``{outputs[1]}`` (one path, quoted), ``{input}`` and
``{output}`` (the first one), ``{stage}`` and ``{run_id}``. Outputs are the
stage's temporary paths: the runner renames them into place only when the
command exits 0. A non-zero exit fails the attempt; the end of stderr is kept
in the stage record; what the command prints on stdout goes to pipekit's
stderr, so that ``pipekit run --json`` output stays one JSON document.
``timeout`` is enforced by killing the command's whole
process group.

The command runs without network (``pipekit.isolate_command``): in a
network namespace with only its own loopback where the OS allows it, so
that the kernel refuses anything beyond; a command that tried to reach the
network fails the stage with the guard's message. ``allow_network = true``
on the stage lifts this (see docs/offline.md).
"""

from __future__ import annotations

import functools
import os
import re
import shlex
import signal
import string
import subprocess
import time
from typing import Any

import attrs
import pipekit

from . import simple_command, starters

STDERR_KEEP = 4000


class _Paths(list):  # type: ignore[type-arg]
    """A list of quoted paths whose ``str`` is all of them, space-separated."""

    def __str__(self) -> str:
        return " ".join(self)

    __format__ = lambda self, spec: format(str(self), spec)  # noqa: E731


PLACEHOLDERS = ("inputs", "outputs", "input", "output", "stage", "run_id")
_HELP = (
    "use {inputs}, {inputs[0]}, {outputs}, {outputs[1]}, {input}, {output}, {stage}, "
    "{run_id}; write {{ and }} for literal braces"
)


def _check_template(_inst: object, _attr: object, value: str) -> None:
    """Check the placeholders' names and syntax; indexes are checked against
    the stage's real inputs and outputs when it runs."""
    problem = _template_problem(value)
    if problem is not None:
        raise ValueError(problem)


@functools.lru_cache(maxsize=256)
def _template_problem(value: str) -> str | None:
    """What is wrong with a command template, or None; once per template
    (a generated pipeline repeats one template for thousands of stages)."""
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(value) if f is not None]
    except ValueError as exc:
        return f"bad placeholder in command ({exc}); {_HELP}"
    for field in fields:
        root = re.split(r"[.\[]", field, maxsplit=1)[0]
        if root not in PLACEHOLDERS:
            return f"unknown placeholder {{{field}}} in command; {_HELP}"
    return None


@attrs.define
class ShellParams:
    cmd: str = attrs.field(validator=_check_template)
    """The command template."""
    env: dict[str, str] = attrs.field(factory=dict)
    """Extra environment variables for the command."""


def render(template: str, inputs: list[str], outputs: list[str], stage: str, run_id: str) -> str:
    qi = _Paths(shlex.quote(str(p)) for p in inputs)
    qo = _Paths(shlex.quote(str(p)) for p in outputs)
    return template.format(
        inputs=qi,
        outputs=qo,
        input=qi[0] if qi else "",
        output=qo[0] if qo else "",
        stage=shlex.quote(stage),
        run_id=shlex.quote(run_id),
    )


def _nsenter_can_exec(program: str, env: dict[str, str] | None, workdir: str) -> bool:
    """Whether ``nsenter`` would execute ``program`` itself: found as the
    shell would look it up, and a binary or a ``#!`` script. Anything else
    goes to the shell, which reports it in its own words, or runs a script
    without ``#!`` as the shell it is (nsenter's ``execvp`` would do that
    too, behind the record's back)."""
    found = _which(program, (env if env is not None else os.environ).get("PATH", os.defpath))
    if found is None:
        return False
    try:
        with open(os.path.join(workdir, found), "rb") as f:  # a relative one is in workdir
            magic = f.read(4)
    except OSError:
        return False
    return magic.startswith(b"#!") or magic == b"\x7fELF"


class _Child:
    """A running command: its pid, the read end of its stderr pipe, and
    how to reap it (``os.waitpid`` for one started with ``posix_spawn``;
    the :class:`subprocess.Popen`'s own methods for one started by it)."""

    __slots__ = ("_popen", "err", "pid", "returncode")

    def __init__(self, pid: int, err: int, popen: subprocess.Popen[bytes] | None = None) -> None:
        self.pid = pid
        self.err = err
        self.returncode: int | None = None
        self._popen = popen

    @classmethod
    def of(cls, proc: subprocess.Popen[bytes]) -> _Child:
        assert proc.stderr is not None
        return cls(proc.pid, proc.stderr.fileno(), proc)

    def close_err(self) -> None:
        if self.err < 0:
            return
        if self._popen is not None and self._popen.stderr is not None:
            self._popen.stderr.close()  # its file object owns the descriptor
        else:
            os.close(self.err)
        self.err = -1

    def reap(self, block: bool) -> bool:
        """Whether the command has ended (and is reaped): waits for it when
        ``block``."""
        if self._popen is not None:
            rc = self._popen.wait() if block else self._popen.poll()
            if rc is None:
                return False
            self.returncode = rc
            return True
        while True:
            try:
                pid, status = os.waitpid(self.pid, 0 if block else os.WNOHANG)
            except ChildProcessError:
                status = 255 << 8  # reaped elsewhere: as Popen reports it
                break
            except InterruptedError:  # pragma: no cover (PEP 475 retries)
                continue
            if pid == 0:
                return False
            break
        self.returncode = os.waitstatus_to_exitcode(status)
        return True

    def kill(self) -> None:
        """SIGKILL to the command's whole process group (it leads its own
        session), so that what it started goes too."""
        if self.returncode is not None:
            return
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


# What subprocess.Popen resets in the child by default (restore_signals):
# Python ignores these, and an ignored signal stays ignored across exec.
_RESET_SIGNALS = tuple(
    getattr(signal, n) for n in ("SIGPIPE", "SIGXFZ", "SIGXFSZ") if hasattr(signal, n)
)


@functools.lru_cache(maxsize=256)
def _which(program: str, path: str) -> str | None:
    """``program`` looked up as the shell would (cached: one look-up per
    program and PATH per run; a program gone since fails to start, and the
    shell then reports it)."""
    import shutil

    if "/" in program:
        return program
    return shutil.which(program, path=path)


_ENV_CACHE: dict[tuple[str, tuple[tuple[str, str], ...]], tuple[Any, str, dict[bytes, bytes]]] = {}


def _spawn_env(workdir: str, extra: dict[str, str]) -> tuple[str, dict[bytes, bytes]]:
    """``(PATH, environment)`` for a command started with posix_spawn: this
    process's environment, the stage's ``env``, and ``PWD`` as the shell
    exports it, encoded. Copying and encoding ``os.environ`` costs about
    20 µs per command, so the result is kept while ``os.environ`` stays
    equal to what it was built from (a 1 µs comparison)."""
    data = getattr(os.environ, "_data", None)  # CPython's bytes mapping behind os.environ
    key = (workdir, tuple(sorted(extra.items())))
    hit = _ENV_CACHE.get(key)
    if hit is not None and data is not None and hit[0] == data:
        return hit[1], hit[2]
    env = {**os.environ, **extra, "PWD": workdir}
    encoded = {os.fsencode(k): os.fsencode(v) for k, v in env.items()}
    if data is not None:
        if len(_ENV_CACHE) >= 64:
            _ENV_CACHE.clear()
        _ENV_CACHE[key] = (dict(data), env.get("PATH", os.defpath), encoded)
    return env.get("PATH", os.defpath), encoded


def _spawn(
    isolated: Any, words: list[str], workdir: str, extra: dict[str, str], fds: dict[int, int]
) -> _Child | None:
    """Start a simple command with ``posix_spawn`` (half the CPU of
    ``subprocess.Popen``, which matters over thousands of stages), or None
    where that cannot do what Popen would: another working folder (no
    ``chdir`` in posix_spawn) or a command started through nsenter."""
    if isolated.wrapped or workdir != os.getcwd():
        return None
    path, env = _spawn_env(workdir, extra)
    program = _which(words[0], path)
    if program is None:
        return None
    if program[0] != "/":
        program = os.path.join(workdir, program)
    stdin = fds.get(0)
    devnull = None
    if stdin is None:
        stdin = devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    err_r, err_w = os.pipe()  # both close on exec; dup2 keeps the child's 2 open
    try:
        actions = [
            (os.POSIX_SPAWN_DUP2, stdin, 0),
            # stdout to our stderr unless redirected: never into --json output
            (os.POSIX_SPAWN_DUP2, fds.get(1, 2), 1),
            (os.POSIX_SPAWN_DUP2, err_w, 2),
        ]
        pid = isolated.spawn(
            program, env, file_actions=actions, setsid=True, setsigdef=_RESET_SIGNALS
        )
    except BaseException:
        os.close(err_r)
        raise
    finally:
        os.close(err_w)
        if devnull is not None:
            os.close(devnull)
    return _Child(pid, err_r)


def _start_direct(
    simple: simple_command.SimpleCommand,
    isolated: Any,
    workdir: str,
    std: dict[str, Any],
    extra: dict[str, str],
) -> _Child | None:
    """Start a simple command (``isolated``, from its words) without the
    shell, or None when it cannot be started so (a redirection cannot be
    opened, the program is not found or is a script without ``#!``): the
    shell then runs it and reports any error in its own words. ``extra``
    is the stage's ``env``, already in ``std["env"]`` for Popen."""
    try:
        fds = simple_command.open_redirects(simple.redirects, workdir)
    except OSError:
        return None
    try:
        proc: Any = _spawn(isolated, simple.words, workdir, extra, fds)
        if proc is None:
            env = std["env"] if std["env"] is not None else os.environ
            if env.get("PWD") != workdir:  # the shell exports its folder as PWD
                std = {**std, "env": {**env, "PWD": workdir}}
            if isolated.wrapped and not _nsenter_can_exec(simple.words[0], std["env"], workdir):
                return None
            proc = _Child.of(
                isolated.popen(stdin=fds.get(0, subprocess.DEVNULL), stdout=fds.get(1, 2), **std)
            )
    except OSError:
        return None
    finally:
        for fd in fds.values():
            os.close(fd)
    return proc


class _Running(pipekit.Started):
    """A started command: its stderr is read as it comes (a command that
    fills the pipe must not stall), then the command is reaped when its
    pidfd says it has ended."""

    KEEP_BYTES = 1 << 16  # more than STDERR_KEEP characters of any encoding

    def __init__(self, ctx: pipekit.StageContext, child: _Child, isolated: Any) -> None:
        self.ctx = ctx
        self.child = child
        self.isolated = isolated
        self.fired = ""
        self._stderr = bytearray()
        self._pidfd = -1

    def fileno(self) -> int:
        return self.child.err if self.child.err >= 0 else self._pidfd

    def poll(self) -> bool:
        child = self.child
        if child.err >= 0:
            chunk = os.read(child.err, 65536)
            if chunk:
                self._stderr += chunk
                if len(self._stderr) > 2 * self.KEEP_BYTES:
                    del self._stderr[: -self.KEEP_BYTES]
                return False
            # stderr closed: the command has ended, or nearly. A pidfd says
            # when; it is opened before stderr is closed, so that its number
            # differs (an epoll set forgets a closed descriptor by itself).
            if not child.reap(block=False):
                try:
                    self._pidfd = os.pidfd_open(child.pid)
                except (AttributeError, OSError):  # no pidfd (Linux < 5.3): wait here
                    child.reap(block=True)
            child.close_err()
            return child.returncode is not None
        if child.reap(block=False):
            self._close_pidfd()
            return True
        return False

    def _close_pidfd(self) -> None:
        if self._pidfd >= 0:
            os.close(self._pidfd)
            self._pidfd = -1

    def kill(self, reason: str) -> None:
        self.fired = self.fired or reason
        self.child.kill()

    def finish(self) -> None:
        self._close_pidfd()
        _conclude(self.ctx, self.isolated, self.fired, bytes(self._stderr), self.child.returncode)


def _conclude(
    ctx: pipekit.StageContext,
    isolated: Any,
    fired: str,
    stderr: bytes,
    returncode: int | None,
    not_started: str | None = None,
) -> None:
    """A command's end in the stage record; raises as ``run()`` does for
    one killed (``fired``: ``cancelled`` or ``timeout``), one that tried
    to reach the network, one that failed, or one that could not be
    started (``not_started`` says why)."""
    ctx.info["stderr"] = stderr[-STDERR_KEEP:].decode("utf-8", "replace")
    if fired == "cancelled":
        raise pipekit.StageFailed("interrupted; the command was killed")
    if fired:
        isolated.check()
        raise pipekit.StageTimeout(
            f"command ran past the stage's timeout of {ctx.timeout:g}s and was killed"
        )
    if not_started is not None:
        isolated.check()
        raise pipekit.StageFailed(f"cannot start the command: {not_started}")
    assert returncode is not None
    ctx.info["exit_code"] = returncode
    isolated.check()  # it tried to reach the network: the guard's message
    if returncode != 0:
        tail = ctx.info["stderr"].strip().splitlines()[-1:] or [""]
        how = f"killed by signal {-returncode}" if returncode < 0 else f"exit code {returncode}"
        message = f"command failed ({how}): {tail[0]}".rstrip(": ")
        why = isolated.explain()
        raise pipekit.StageFailed(f"{message}; {why}" if why else message)


def _start_by_starter(
    ctx: pipekit.StageContext,
    isolated: Any,
    simple: simple_command.SimpleCommand | None,
    command: str,
    workdir: str,
    extra: dict[str, str],
    behind: _ByStarter | None = None,
) -> _ByStarter | None:
    """Hand the command to a command starter (see :mod:`.starters`), or
    None where none can be had. A simple command is started without the
    shell, its redirections opened by the child itself, left to right as
    the shell does; if it cannot be started so (a redirection cannot be
    opened, the program is missing or is a script without ``#!``), the
    starter starts ``/bin/sh -c`` instead, which runs it or reports the
    error in its own words. ``isolated`` is the command's (its words, or
    the shell's for one that is not simple). ``behind``: queue it on that
    command's starter, to start the moment that one ends well."""
    if behind is None:
        starter = starters.take(isolated)
    else:
        starter = behind.starter
        if starter.broken or isolated.namespace is not behind.isolated.namespace:
            return None
    if starter is None:
        return None
    path, env = _spawn_env(workdir, extra)
    devnull = (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0)
    tries: list[Any] = []
    program = _which(simple.words[0], path) if simple is not None else None
    if simple is not None and program is not None:
        if program[0] != "/":
            program = os.path.join(workdir, program)
        targets = simple_command.redirect_targets(simple.redirects, workdir)
        redirected = {fd for fd, _, _ in targets}
        actions: list[Any] = [] if 0 in redirected else [devnull]
        actions += [(os.POSIX_SPAWN_OPEN, fd, path, flags, 0o666) for fd, path, flags in targets]
        # stdout to our stderr unless redirected: never into --json output
        tries.append((program, simple.words, actions, 1 not in redirected))
    tries.append(("/bin/sh", ["/bin/sh", "-c", command], [devnull], True))
    # The starter reads the namespace's counters around the command: with a
    # command queued behind another, no reading here could tell them apart.
    count = isolated.namespace is not None
    isolated.handed_to_starter(counted=count)
    handle = _ByStarter(ctx, starter, isolated, direct=len(tries) - 1)
    try:
        handle.id = starter.run(handle, workdir, env, tries, after=behind is not None, count=count)
    except OSError:
        starter.broken = True
        return None
    return handle


class _ByStarter(pipekit.Started):
    """A command a starter runs (or will, when queued behind another): its
    one reply says how it ended, with the end of its stderr."""

    def __init__(
        self, ctx: pipekit.StageContext, starter: starters.Starter, isolated: Any, direct: int
    ) -> None:
        self.ctx = ctx
        self.starter = starter
        self.isolated = isolated
        self.direct = direct
        self.id = 0
        self.fired = ""
        self.result: tuple[Any, ...] | None = None

    def fileno(self) -> int:
        return self.starter.r

    def poll(self) -> bool:
        if self.result is None:
            self.starter.pump()  # (its reply may have come with another's)
            if self.result is None:
                return False
        starters.give_back(self.starter)  # once it has no command in hand
        pid, _, _, _, error, _ = self.result
        self.started = pid is not None or error is not None
        return True

    def kill(self, reason: str) -> None:
        self.fired = self.fired or reason
        if self.result is None:
            self.starter.kill(self.id)

    def withdraw(self) -> None:
        if self.result is None:
            self.starter.drop(self.id)

    def finish(self) -> None:
        assert self.result is not None
        pid, returncode, tried, stderr, error, counts = self.result
        if counts is not None:
            self.isolated.counted_by_starter(*counts)
        if pid is not None:
            self.isolated.ran_as(pid)
            if tried <= self.direct:
                self.ctx.info["shell"] = False  # started without /bin/sh
        elif error is None:  # (the runner does not finish what never started)
            raise pipekit.StageFailed(
                "not started: the command before it failed, or it was withdrawn"
            )
        _conclude(self.ctx, self.isolated, self.fired, stderr, returncode, error)


class Shell(pipekit.Stage):
    """Run a shell command template over the inputs and outputs."""

    name = "shell"
    version = "1"
    Params = ShellParams
    handles_timeout = True
    command_params = ("cmd",)

    def run(self, ctx: pipekit.StageContext) -> None:
        # A worker thread (a stage with retries): the command is started
        # here, not by a starter. Starters live in the network namespaces
        # of the scheduling thread's slots, which last as long as the
        # process; a worker thread's namespaces end with the thread.
        deadline = None if ctx.timeout is None else time.monotonic() + ctx.timeout
        started = self._start(ctx, by_starter=False)
        assert started is not None
        started.wait(deadline, ctx.cancelled)

    def start(self, ctx: pipekit.StageContext) -> pipekit.Started:
        started = self._start(ctx, by_starter=True)
        assert started is not None
        return started

    def start_after(
        self, ctx: pipekit.StageContext, running: pipekit.Started
    ) -> pipekit.Started | None:
        # Queued on the starter of the command before: it starts this one
        # the moment that one ends well, with no round trip to the runner.
        # (The runner queues only stages without a timeout.)
        if not isinstance(running, _ByStarter):
            return None
        return self._start(ctx, by_starter=True, behind=running)

    def _start(
        self, ctx: pipekit.StageContext, by_starter: bool, behind: _ByStarter | None = None
    ) -> pipekit.Started | None:
        params: ShellParams = ctx.params
        try:
            command = render(
                params.cmd,
                [str(p) for p in ctx.inputs],
                [str(p) for p in ctx.outputs],
                ctx.stage_name,
                ctx.run_id,
            )
        except (IndexError, KeyError, AttributeError, ValueError) as exc:
            raise pipekit.NonRetryable(
                f"cannot fill the command template: {type(exc).__name__}: {exc} "
                f"(the stage has {len(ctx.inputs)} input(s) and {len(ctx.outputs)} output(s))"
            ) from None
        env = None
        if params.env:
            env = dict(os.environ)
            env.update(params.env)
        ctx.info["command"] = command
        try:
            mode = simple_command.shell_mode()
            use_starters = by_starter and starters.enabled()
        except ValueError as exc:
            raise pipekit.NonRetryable(str(exc)) from None
        if behind is not None and not use_starters:
            return None
        workdir = str(ctx.workdir)
        std = {"cwd": workdir, "env": env, "stderr": subprocess.PIPE, "start_new_session": True}
        simple = simple_command.parse(command) if mode == "auto" else None
        shell_argv = ["/bin/sh", "-c", command]
        # One IsolatedCommand (one counter reading) whichever way it starts.
        isolated = pipekit.isolate_command(simple.words if simple is not None else shell_argv)
        if use_starters:
            handed = _start_by_starter(
                ctx, isolated, simple, command, workdir, params.env or {}, behind
            )
            if handed is not None or behind is not None:
                return handed
        proc = None
        if simple is not None:
            proc = _start_direct(simple, isolated, workdir, std, params.env)
            if proc is None:  # it cannot start without the shell: the shell runs it
                isolated = pipekit.isolate_command(shell_argv)
        if proc is None:
            # stdout to our stderr: never mixed into `pipekit run --json` output
            proc = _Child.of(isolated.popen(stdin=subprocess.DEVNULL, stdout=2, **std))
        else:
            ctx.info["shell"] = False  # started without /bin/sh
        return _Running(ctx, proc, isolated)
