"""Pieces every subcommand shares: common options, loading the pipeline,
printing errors and JSON."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from typing import Any, TextIO

from ..errors import EXIT_INTERRUPTED

__all__ = ["add_file", "add_common", "error", "print_json", "load", "load_for_run"]
__all__ += ["install_signal_handlers", "printable", "notice", "OUTPUT", "data_stdout"]


class _Output:
    """How this command writes: set once by ``main`` from the common options."""

    json_log = False
    """``--log-format json``: every line on stderr is a JSON object."""
    quiet = False
    """``-q``: only errors; ``sys.stdout`` is then a null file, and data
    (``--json`` documents, bytes exported to ``-``) go to :attr:`data`."""
    data: TextIO | None = None


OUTPUT = _Output()

# Characters a terminal acts on instead of showing: C0 and C1 controls, DEL,
# the bidirectional overrides and isolates, the line and paragraph separators.
_UNSAFE = frozenset(
    [*range(0x20), *range(0x7F, 0xA0), *range(0x2028, 0x202F), *range(0x2066, 0x206A)]
)
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


# fmt: off
def add_file(p: argparse.ArgumentParser) -> None:
    p.add_argument("-f", "--file", type=Path, default=argparse.SUPPRESS, help="the pipeline file (default: pipekit.toml, pipeline.toml or pipeline.json here)")
    p.add_argument("--backend", default=argparse.SUPPRESS, metavar="NAME", help="backend for locks, idempotency and checkpoints (overrides [backend].name)")


def add_common(p: argparse.ArgumentParser) -> None:
    """Options accepted before or after the command (``pipekit -q run`` and
    ``pipekit run -q`` alike)."""
    top = p.prog == "pipekit"

    def default(value: Any) -> Any:
        return value if top else argparse.SUPPRESS

    p.add_argument("--log-format", choices=("text", "json"), default=default("text"), help="format of every line on stderr: text, or one JSON object per line (default: text)")
    p.add_argument("-v", "--verbose", action="count", default=default(0), help="more log output (-vv: debug)")
    p.add_argument("-q", "--quiet", action="store_true", default=default(False), help="print only errors (a --json document is still printed)")
# fmt: on


def printable(text: str) -> str:
    """``text`` with every character a terminal would act on written as an
    escape (``\\x1b``, ``\\n``, ``\\u202e``), so that data from a record (a
    dead letter, an idempotency key) cannot retitle, clear or rewrite the
    terminal; printable characters, any script, stay as they are."""
    if text.isprintable():
        return text
    return "".join(_escape(ch) if ord(ch) in _UNSAFE else ch for ch in text)


def _escape(ch: str) -> str:
    code = ord(ch)
    return _NAMED.get(ch) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def error(message: str, *, traceback: str | None = None, **extra: Any) -> None:
    """An error on stderr: ``pipekit: error: ...`` lines (the traceback,
    when given, after them), or one JSON object with ``--log-format json``
    (``extra`` keys only there)."""
    if OUTPUT.json_log:
        from .._log_lines import json_line

        print(json_line("error", message, traceback=traceback, **extra), file=sys.stderr)
        return
    for line in message.splitlines() or [""]:
        print(f"pipekit: error: {line}", file=sys.stderr)
    if traceback:
        print(traceback.rstrip(), file=sys.stderr)


def notice(message: str, *, level: str = "warning", even_quiet: bool = False) -> None:
    """A message on stderr that is not an error: ``pipekit: ...``, or one
    JSON object; nothing with ``-q`` unless ``even_quiet``."""
    if OUTPUT.quiet and not even_quiet:
        return
    if OUTPUT.json_log:
        from .._log_lines import json_line

        print(json_line(level, message), file=sys.stderr)
        return
    for line in message.splitlines() or [""]:
        print(f"pipekit: {line}", file=sys.stderr)


def data_stdout() -> TextIO:
    """Where data goes (a ``--json`` document): stdout, even with ``-q``."""
    return OUTPUT.data or sys.stdout


SCHEMA_VERSION = 1
"""The ``schema_version`` of every JSON document (an object) the commands
print: raised when a key changes meaning or goes; new keys do not raise it."""


def print_json(doc: Any, *, indent: bool = False) -> None:
    """One JSON document on stdout; an object gets ``schema_version`` first."""
    from .. import _json

    if isinstance(doc, dict):
        doc = {"schema_version": SCHEMA_VERSION, **doc}
    data_stdout().write(_json.dumps(doc, indent=indent).decode() + "\n")


def load(args: argparse.Namespace) -> tuple[Any, Any]:
    """Load and validate the pipeline, with every plugin loaded."""
    from ..plan._config import find_pipeline_file
    from ..plan._pipeline import load_pipeline
    from ..plugins._manager import load_registry

    file = args.file or find_pipeline_file()
    registry = load_registry()
    pipeline = load_pipeline(file, registry, backend_override=args.backend)
    return pipeline, registry


def load_for_run(args: argparse.Namespace) -> tuple[Any, Any]:
    """A cached plan when one is valid (registry None: plugins load only if
    a stage must run), else a full load that is then cached."""
    from ..plan import _plan_cache as plancache
    from ..plan._config import find_pipeline_file

    file = args.file or find_pipeline_file()
    cached = plancache.load(file, args.backend)
    if cached is not None:
        return cached, None
    pipeline, registry = load(args)
    plancache.store(pipeline, registry, args.backend)
    return pipeline, registry


class Interrupts:
    """SIGINT/SIGTERM: the first one stops the run gracefully (exit 130), a
    second one at once. While a runner's scheduler loops, the first goes to
    it (:meth:`Runner.signalled`: a flag, no exception raised into the middle
    of its work); before and after, it raises KeyboardInterrupt."""

    def __init__(self) -> None:
        self.count = 0
        self.runner: Any = None

    def handler(self, _signum: int, _frame: Any) -> None:
        self.count += 1
        if self.count > 1:
            os._exit(EXIT_INTERRUPTED)
        if self.runner is not None and self.runner.signalled():
            return
        raise KeyboardInterrupt()


def install_signal_handlers() -> Interrupts:
    """Handle SIGINT and SIGTERM as :class:`Interrupts` says; set its
    ``runner`` once there is one."""
    interrupts = Interrupts()
    signal.signal(signal.SIGINT, interrupts.handler)
    signal.signal(signal.SIGTERM, interrupts.handler)
    return interrupts


def add_targets(parser: Any) -> None:
    """``[TARGET ...]`` and ``--downstream`` (run and status)."""
    parser.add_argument(
        "targets",
        nargs="*",
        metavar="TARGET",
        help="only these stages (names or glob patterns like 'train@*') and what they need upstream",
    )
    parser.add_argument(
        "--downstream",
        action="store_true",
        help="the targets and every stage downstream of them, instead of upstream",
    )


def stdout_gone() -> None:
    """Stdout's reader went away (``pipekit status | head -1``): point it at
    /dev/null, so that what is still written, and the final flush, go
    nowhere instead of raising ``BrokenPipeError``."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    finally:
        os.close(devnull)
