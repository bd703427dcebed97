"""One module per ``pipekit`` subcommand.

Each module defines ``add_parser(sub)`` (adds its subparser to the
``argparse`` sub-parsers action and sets ``handler``) and keeps its heavy
imports inside the handler, so that building the parser stays cheap.
``COMMANDS`` lists them in the order ``pipekit --help`` shows them.
"""

from __future__ import annotations

COMMANDS: tuple[str, ...] = (
    "init",
    "run",
    "status",
    "dag",
    "runs",
    "report",
    "check",
    "state",
    "checkpoints",
    "idem",
    "dlq",
    "plugins",
    "completion",
    "doctor",
)
