"""Whole-file processors: ``copy`` and ``concat``."""

from __future__ import annotations

import shutil

import pipekit


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
            shutil.copyfile(src, dst)


class Concat(pipekit.Stage):
    """Concatenate the inputs, in declared order, into one output."""

    name = "concat"
    version = "1"

    def check_arity(self, n_in: int, n_out: int) -> str | None:
        if n_out != 1 or n_in == 0:
            return f"concat needs at least one input and exactly one output, got {n_out} outputs"
        return None

    def run(self, ctx: pipekit.StageContext) -> None:
        with open(ctx.outputs[0], "wb") as out:
            for src in ctx.inputs:
                with open(src, "rb") as f:
                    shutil.copyfileobj(f, out, 1 << 20)
