"""``shell``: run a command template over the stage's inputs and outputs.

The command runs with ``/bin/sh -c`` in the pipeline's folder. Placeholders:
``{inputs}`` and ``{outputs}`` (all paths, quoted, space-separated),
``{inputs[0]}``, ``{outputs[1]}`` (one path, quoted), ``{input}`` and
``{output}`` (the first one), ``{stage}`` and ``{run_id}``. Outputs are the
stage's temporary paths: the runner renames them into place only when the
command exits 0. A non-zero exit fails the attempt; the end of stderr is kept
in the stage record; what the command prints on stdout goes to pipekit's
stderr, so that ``pipekit run --json`` output stays one JSON document.
``timeout`` is enforced by killing the command's whole
process group.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import string
import subprocess
import time

import attrs
import pipekit

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
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(value) if f is not None]
    except ValueError as exc:
        raise ValueError(f"bad placeholder in command ({exc}); {_HELP}") from None
    for field in fields:
        root = re.split(r"[.\[]", field, maxsplit=1)[0]
        if root not in PLACEHOLDERS:
            raise ValueError(f"unknown placeholder {{{field}}} in command; {_HELP}")


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


class Shell(pipekit.Stage):
    """Run a shell command template over the inputs and outputs."""

    name = "shell"
    version = "1"
    Params = ShellParams
    handles_timeout = True

    def run(self, ctx: pipekit.StageContext) -> None:
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
        proc = subprocess.Popen(
            ["/bin/sh", "-c", command],
            cwd=ctx.workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=2,  # to our stderr: never mixed into `pipekit run --json` output
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        deadline = None if ctx.timeout is None else time.monotonic() + ctx.timeout
        stderr = b""
        while True:
            wait = 0.1
            if deadline is not None:
                wait = max(0.0, min(wait, deadline - time.monotonic()))
            try:
                _, stderr = proc.communicate(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                pass
            if ctx.cancelled.is_set() or (deadline is not None and time.monotonic() >= deadline):
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                _, stderr = proc.communicate()
                ctx.info["stderr"] = stderr[-STDERR_KEEP:].decode("utf-8", "replace")
                if ctx.cancelled.is_set():
                    raise pipekit.StageFailed("interrupted; the command was killed")
                raise pipekit.StageTimeout(
                    f"command ran past the stage's timeout of {ctx.timeout:g}s and was killed"
                )
        ctx.info["stderr"] = stderr[-STDERR_KEEP:].decode("utf-8", "replace")
        ctx.info["exit_code"] = proc.returncode
        if proc.returncode != 0:
            tail = ctx.info["stderr"].strip().splitlines()[-1:] or [""]
            how = (
                f"killed by signal {-proc.returncode}"
                if proc.returncode < 0
                else f"exit code {proc.returncode}"
            )
            raise pipekit.StageFailed(f"command failed ({how}): {tail[0]}".rstrip(": "))
