"""A processor for the tests of issue 20 item 2 (workers die with their
runner), loaded through PIPEKIT_PLUGIN_MODULES."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pipekit


@attrs.define
class GatedUpperParams:
    marker: str
    """Written with this process's pid when the first record is processed."""
    gate: str
    """While this file does not exist, each record takes ``slow_s`` seconds."""
    slow_s: float = 0.005
    child: str = ""
    """When set: at the first record, start a long ``sleep`` child in this
    process's group and write its pid here."""


class GatedUpper(pipekit.RecordStage):
    """Upper-case each line; slow until the gate file exists."""

    name = "gated-upper"
    version = "1"
    Params = GatedUpperParams

    def __init__(self) -> None:
        self._n = 0
        self._children: list[subprocess.Popen[bytes]] = []

    def process(self, record: str, params: GatedUpperParams) -> Iterator[str]:
        self._n += 1
        if self._n == 1:
            if params.child:
                child = subprocess.Popen(["sleep", "600"], stdin=subprocess.DEVNULL)
                self._children.append(child)
                Path(params.child).write_text(str(child.pid))
            Path(params.marker).write_text(str(os.getpid()))
        if not os.path.exists(params.gate):
            time.sleep(params.slow_s)
        yield record.upper()


@attrs.define
class PidSleepParams:
    marker: str
    """Written with this process's pid when the work starts."""
    seconds: float = 600.0


class PidSleep(pipekit.Stage):
    """Say which process works, sleep, then write the output."""

    name = "pid-sleep"
    version = "1"
    Params = PidSleepParams

    def run(self, ctx: pipekit.StageContext) -> None:
        Path(ctx.params.marker).write_text(str(os.getpid()))
        time.sleep(ctx.params.seconds)
        for out in ctx.outputs:
            out.write_text("slept\n")


@pipekit.hookimpl
def register_stages(register: Callable[[Any], None]) -> None:
    register(GatedUpper())
    register(PidSleep())
