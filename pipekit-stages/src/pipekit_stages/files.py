"""Whole-file processors: ``copy`` (files and folders) and ``concat``.

Outputs are opened with ``O_NOFOLLOW``: a symlink planted at an output's
path fails the stage instead of redirecting what it writes.
"""

from __future__ import annotations

import os
import shutil
from typing import IO

import pipekit


def _open_output(path: os.PathLike[str] | str) -> IO[bytes]:
    """``path`` opened for writing (created or emptied), never through a symlink."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    return os.fdopen(os.open(path, flags, 0o666), "wb")


class Copy(pipekit.Stage):
    """Copy each input to the output at the same position."""

    name = "copy"
    version = "1"

    def check_arity(self, n_in: int, n_out: int) -> str | None:
        if n_in != n_out or n_in == 0:
            return f"copy needs as many outputs as inputs (at least one), got {n_in} inputs and {n_out} outputs"
        return None

    def run(self, ctx: pipekit.StageContext) -> None:
        for src, dst in zip(ctx.inputs, ctx.outputs):
            if os.path.isdir(src):  # a folder: its tree, into the empty temp folder
                if not os.path.isdir(dst):
                    raise pipekit.NonRetryable(
                        f"copy: {src} is a folder; its output must be one too (a path ending with '/')"
                    )
                shutil.copytree(src, dst, symlinks=True, dirs_exist_ok=True)
                continue
            if os.path.isdir(dst):
                raise pipekit.NonRetryable(
                    f"copy: {src} is a file; its output must be one too (a path without a trailing '/')"
                )
            with open(src, "rb") as f, _open_output(dst) as out:
                shutil.copyfileobj(f, out, 1 << 20)


class Concat(pipekit.Stage):
    """Concatenate the inputs, in declared order, into one output."""

    name = "concat"
    version = "1"

    def check_arity(self, n_in: int, n_out: int) -> str | None:
        if n_out != 1 or n_in == 0:
            return f"concat needs at least one input and exactly one output, got {n_out} outputs"
        return None

    def run(self, ctx: pipekit.StageContext) -> None:
        with _open_output(ctx.outputs[0]) as out:
            for src in ctx.inputs:
                with open(src, "rb") as f:
                    shutil.copyfileobj(f, out, 1 << 20)
