"""The entry point of pipekit-stages: registers every built-in processor."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pipekit

from .files import Concat, Copy
from .records import Filter, Lower, Replace, Upper
from .shell import Shell

BUILTINS = (Copy(), Concat(), Upper(), Lower(), Filter(), Replace(), Shell())


@pipekit.hookimpl
def register_stages(register: Callable[[Any], None]) -> None:
    for processor in BUILTINS:
        register(processor)
