"""An example third-party plugin, exactly as DESIGN §2 shows one."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import attrs
import pipekit


@attrs.define
class ReverseParams:
    suffix: str = ""


class Reverse(pipekit.RecordStage):
    """Reverse every line, then append a suffix."""

    name = "reverse"
    version = "1"
    Params = ReverseParams

    def process(self, record: str, params: ReverseParams) -> Iterator[str]:
        yield record[::-1] + params.suffix


class LineCount(pipekit.Stage):
    """Count the lines of all inputs."""

    name = "linecount"
    version = "1"

    def run(self, ctx: pipekit.StageContext) -> None:
        n = sum(1 for p in ctx.inputs for _ in p.open())
        ctx.outputs[0].write_text(f"{n}\n")


@pipekit.hookimpl
def register_stages(register: Callable[[Any], None]) -> None:
    register(Reverse())
    register(LineCount())
