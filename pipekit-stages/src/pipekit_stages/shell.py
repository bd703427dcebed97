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
import shutil
import signal
import string
import subprocess
import time
from typing import Any

import attrs
import pipekit

from . import simple_command

STDERR_KEEP = 4000


class _Paths(list):  # type: ignore[type-arg]
    """A list of quoted paths whose ``str`` is all of them, space-separated."""

    def __str__(self) -> str:
        return " ".join(self)

    __format__ = lambda self, spec: format(str(self), spec)  # noqa: E731


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


# The fields a template may hold: the placeholders, and an index of the lists.
_FIELD = re.compile(r"(?:inputs|outputs)\[[0-9]+\]|inputs|outputs|input|output|stage|run_id")


@functools.lru_cache(maxsize=256)
def _template_problem(value: str) -> str | None:
    """What is wrong with a command template, or None; once per template
    (a generated pipeline repeats one template for thousands of stages).
    Only the placeholders and the indexes of ``inputs`` and ``outputs`` are
    allowed: no attribute, no key, no field inside a format spec."""
    try:
        parsed = list(string.Formatter().parse(value))
    except ValueError as exc:
        return f"bad placeholder in command ({exc}); {_HELP}"
    for _, field, spec, _ in parsed:
        if field is None:
            continue
        if not _FIELD.fullmatch(field):
            return f"unknown placeholder {{{field}}} in command; {_HELP}"
        if spec and ("{" in spec or "}" in spec):
            return f"a placeholder inside the format of {{{field}}} in command; {_HELP}"
    return None


_VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _check_names(_inst: object, _attr: object, value: list[str]) -> None:
    for name in value:
        if not _VARIABLE_NAME.fullmatch(name):
            raise ValueError(
                f"{name!r} is not an environment variable name (letters, digits and '_')"
            )


@attrs.define
class ShellParams:
    cmd: str = attrs.field(validator=_check_template)
    """The command template."""
    env: dict[str, str] = attrs.field(factory=dict)
    """Extra environment variables for the command. Their values are part of
    the stage's fingerprint and are recorded: no secrets here."""
    env_pass: list[str] = attrs.field(factory=list, validator=_check_names)
    """Names of the runner's environment variables the command needs (secrets):
    passed through, each must be set; only the names are fingerprinted or recorded."""


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


@functools.lru_cache(maxsize=256)
def _which(program: str, path: str) -> str | None:
    """``program`` looked up as the shell would (one look-up per program
    and PATH per run; :func:`_can_exec` still checks it every time)."""
    if "/" in program:
        return program
    return shutil.which(program, path=path)


def _can_exec(program: str, env: Any, workdir: str) -> str | None:
    """The path to execute ``program`` by, when it can be executed without
    the shell: found as the shell would look it up, and a binary or a
    ``#!`` script. Anything else (None) goes to the shell, which reports
    it in its own words, or runs a script without ``#!`` as the shell it is."""
    found = _which(program, env.get("PATH", os.defpath))
    if found is None:
        return None
    found = os.path.join(workdir, found)  # a relative one is in workdir
    try:
        with open(found, "rb") as f:
            magic = f.read(4)
    except OSError:
        return None
    return found if magic.startswith(b"#!") or magic == b"\x7fELF" else None


def _runner_environment(workdir: str, run_id: str) -> Any:
    """The runner's environment with ``PWD`` set to ``workdir``: None (the
    command inherits it as it is) where the runner's ``PWD`` is that
    folder already (``pipekit run`` sees to it); else a copy made once per
    run and folder. Copying and encoding it for each of 1,000 commands
    took 0.1-0.2 s of a run's CPU."""
    if os.environ.get("PWD") == workdir:
        return None
    return _environment_with_pwd(workdir, run_id)


@functools.lru_cache(maxsize=4)
def _environment_with_pwd(workdir: str, run_id: str) -> Any:
    return {**os.environb, b"PWD": os.fsencode(workdir)}


def _start_simple(
    simple: simple_command.SimpleCommand,
    workdir: str,
    env: dict[str, str] | None,
    run_id: str,
) -> tuple[subprocess.Popen[bytes], Any] | None:
    """Start a simple command without the shell, or None when it cannot be
    started so (a redirection cannot be opened, the program is not found or
    is a script without ``#!``): the shell then runs it and reports any
    error in its own words."""
    base = env if env is not None else os.environ
    program = _can_exec(simple.words[0], base, workdir)
    if program is None:
        return None
    # as the shell would, with its folder as PWD
    env = _runner_environment(workdir, run_id) if env is None else {**env, "PWD": workdir}
    try:
        fds = simple_command.open_redirects(simple.redirects, workdir)
    except OSError:
        return None
    isolated = pipekit.isolate_command(simple.words)
    try:
        proc = isolated.popen(
            program,
            stdin=fds.get(0, subprocess.DEVNULL),
            stdout=fds.get(1, 2),  # our stderr unless redirected: never into --json output
            stderr=subprocess.PIPE,
            cwd=workdir,
            env=env,
            start_new_session=True,
        )
    except OSError:
        return None
    finally:
        for fd in fds.values():
            os.close(fd)
    return proc, isolated


class _Running(pipekit.Started):
    """A started command: its stderr is read as it comes (a command that
    fills the pipe must not stall), then the command is reaped when its
    pidfd says it has ended."""

    KEEP_BYTES = 1 << 16  # more than STDERR_KEEP characters of any encoding

    def __init__(
        self, ctx: pipekit.StageContext, proc: subprocess.Popen[bytes], isolated: Any
    ) -> None:
        assert proc.stderr is not None
        self.ctx = ctx
        self.proc = proc
        self.err = proc.stderr
        self.isolated = isolated
        self.fired = ""
        self._stderr = bytearray()
        self._pidfd = -1

    def fileno(self) -> int:
        return self._pidfd if self.err.closed else self.err.fileno()

    def poll(self) -> bool:
        if self.err.closed:
            if self.proc.poll() is None:
                return False
            self._close_pidfd()
            return True
        chunk = os.read(self.err.fileno(), 65536)
        if chunk:
            self._stderr += chunk
            if len(self._stderr) > 2 * self.KEEP_BYTES:
                del self._stderr[: -self.KEEP_BYTES]
            return False
        # stderr closed: the command has ended, or nearly. A pidfd says
        # when; it is opened before stderr is closed, so that its number
        # differs (an epoll set forgets a closed descriptor by itself).
        if self.proc.poll() is None:
            try:
                self._pidfd = os.pidfd_open(self.proc.pid)
            except (AttributeError, OSError):  # no pidfd (Linux < 5.3): wait here
                self.proc.wait()
        self.err.close()
        return self.proc.returncode is not None

    def _close_pidfd(self) -> None:
        if self._pidfd >= 0:
            os.close(self._pidfd)
            self._pidfd = -1

    def kill(self, reason: str) -> None:
        """SIGKILL to the command's whole process group (it leads its own
        session), so that what it started goes too."""
        self.fired = self.fired or reason
        if self.proc.returncode is None:  # not reaped: its pid is still its own
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def finish(self) -> None:
        self._close_pidfd()
        _conclude(self.ctx, self.isolated, self.fired, bytes(self._stderr), self.proc.returncode)


def _conclude(
    ctx: pipekit.StageContext, isolated: Any, fired: str, stderr: bytes, returncode: int | None
) -> None:
    """A command's end in the stage record; raises as ``run()`` does for
    one killed (``fired``: ``cancelled`` or ``timeout``), one that tried
    to reach the network, or one that failed."""
    ctx.info["stderr"] = stderr[-STDERR_KEEP:].decode("utf-8", "replace")
    if fired == "cancelled":
        raise pipekit.StageFailed("interrupted; the command was killed")
    if fired:
        isolated.check()
        raise pipekit.StageTimeout(
            f"command ran past the stage's timeout of {ctx.timeout:g}s and was killed"
        )
    assert returncode is not None
    ctx.info["exit_code"] = returncode
    isolated.check()  # it tried to reach the network: the guard's message
    if returncode != 0:
        tail = ctx.info["stderr"].strip().splitlines()[-1:] or [""]
        how = f"killed by signal {-returncode}" if returncode < 0 else f"exit code {returncode}"
        message = f"command failed ({how}): {tail[0]}".rstrip(": ")
        why = isolated.explain()
        raise pipekit.StageFailed(f"{message}; {why}" if why else message)


def _environment(params: ShellParams) -> dict[str, str] | None:
    """The command's environment: None (this process's) when the stage adds
    nothing. The variables of ``env_pass`` are this process's (checked here
    to be set); their values are never put anywhere else."""
    missing = [name for name in params.env_pass if name not in os.environ]
    if missing:
        raise pipekit.NonRetryable(
            f"environment variable(s) named in params.env_pass not set: {', '.join(missing)}"
        )
    if not params.env:
        return None
    env = os.environ.copy()
    env.update(params.env)
    for name in params.env_pass:  # the runner's value, whatever `env` says
        env[name] = os.environ[name]
    return env


class Shell(pipekit.Stage):
    """Run a shell command template over the inputs and outputs."""

    name = "shell"
    version = "1"
    Params = ShellParams
    handles_timeout = True
    command_params = ("cmd",)

    def run(self, ctx: pipekit.StageContext) -> None:
        deadline = None if ctx.timeout is None else time.monotonic() + ctx.timeout
        self.start(ctx).wait(deadline, ctx.cancelled)

    def start(self, ctx: pipekit.StageContext) -> pipekit.Started:
        params: ShellParams = ctx.params
        command = _command(ctx)
        ctx.info["command"] = command
        ctx.log.info("stage %s: $ %s", ctx.stage_name, command)  # shown with -v
        try:
            mode = simple_command.shell_mode()
        except ValueError as exc:
            raise pipekit.NonRetryable(str(exc)) from None
        workdir = str(ctx.workdir)
        env = _environment(params)
        simple = simple_command.parse(command) if mode == "auto" else None
        if simple is not None:
            started = _start_simple(simple, workdir, env, ctx.run_id)
            if started is not None:
                ctx.info["shell"] = False  # started without /bin/sh
                return _Running(ctx, *started)
        isolated = pipekit.isolate_command(["/bin/sh", "-c", command])
        proc = isolated.popen(
            stdin=subprocess.DEVNULL,
            stdout=2,  # our stderr: never mixed into `pipekit run --json` output
            stderr=subprocess.PIPE,
            cwd=workdir,
            env=env,
            start_new_session=True,
        )
        return _Running(ctx, proc, isolated)


def _command(ctx: pipekit.StageContext) -> str:
    """The stage's command template filled in with its paths."""
    try:
        return render(
            ctx.params.cmd,
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
