"""Processors for the Redis backend's end-to-end tests (loaded through
PIPEKIT_PLUGIN_MODULES next to pipekit_testplugin)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import pipekit


@attrs.define
class StampParams:
    log: str
    """Each execution appends ``<stage> <pid>`` here when it starts."""
    seconds: float = 0.0


class Stamp(pipekit.Stage):
    """Log the start, work ``seconds``, then write ``<run_id> <pid>`` to
    every output: which runner's work ended up in place is visible."""

    name = "stamp"
    version = "1"
    Params = StampParams

    def run(self, ctx: pipekit.StageContext) -> None:
        with open(ctx.params.log, "a") as f:
            f.write(f"{ctx.stage_name} {os.getpid()}\n")
        deadline = time.monotonic() + ctx.params.seconds
        while time.monotonic() < deadline:  # monotonic: a SIGSTOP counts as time spent
            time.sleep(0.02)
        for out in ctx.outputs:
            Path(out).write_text(f"{ctx.run_id} {os.getpid()}\n")


@pipekit.hookimpl
def register_stages(register: Callable[[Any], None]) -> None:
    register(Stamp())
