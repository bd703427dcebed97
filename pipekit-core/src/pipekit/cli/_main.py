"""The ``pipekit`` command (argparse rather than click or typer: a few
milliseconds to import where click costs tens, on every no-op run)."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from pathlib import Path

from .. import __version__
from ..errors import EXIT_INTERRUPTED, EXIT_USAGE, PipekitError
from ._commands import COMMANDS
from ._common import add_common, error
from ._log_format import JsonFormatter

__all__ = ["main", "build_parser"]

DESCRIPTION = """\
pipekit runs batch pipelines that survive crashes, retries and reruns without
losing or duplicating work. A pipeline file (pipekit.toml, pipeline.toml or
pipeline.json in the current folder, or -f FILE) declares stages; each names a
stage processor that an installed plugin registered.
"""

EPILOG = """\
exit codes: 0 all stages ok or skipped; 1 a stage failed; 2 usage or config
error; 3 could not take a lock in time; 130 interrupted.

examples:
  pipekit run                      run the pipeline in this folder
  pipekit run -f etl.toml --jobs 4 run independent stages 4 at a time
  pipekit status --json            what would run, and why, as JSON
  pipekit state history            the state file's transactions, newest first
  pipekit state restore            restore the newest state backup that parses
  pipekit checkpoints verify       check every stored checkpoint's SHA-256
  pipekit plugins                  installed plugins and what they register
"""


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole command line, or with ``only`` that one command's part
    (building all of them costs every run about 15 ms)."""
    parser = argparse.ArgumentParser(
        prog="pipekit",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"pipekit {__version__}")
    parser.add_argument("-f", "--file", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--backend", default=None, help=argparse.SUPPRESS)
    add_common(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    for name in COMMANDS if only is None else (only,):
        importlib.import_module(f"pipekit.cli._{name}").add_parser(sub)
    return parser


def _setup_logging(args: argparse.Namespace) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if args.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("pipekit: %(levelname)s: %(message)s"))
    root = logging.getLogger("pipekit")
    root.handlers[:] = [handler]
    verbose = min(args.verbose, 2)
    root.setLevel(
        logging.ERROR if args.quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[verbose]
    )
    root.propagate = False


def main(argv: list[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    # `pipekit COMMAND ...`: only that command's parser; anything else (help,
    # options before the command, a typo) gets the whole one.
    only = words[0] if words and words[0] in COMMANDS else None
    parser = build_parser(only)
    if "_ARGCOMPLETE" in os.environ:  # a shell asking for completions (`pipekit completion`)
        from ._completion import complete

        complete(parser)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    _setup_logging(args)
    try:
        return int(args.handler(args))
    except PipekitError as exc:
        error(str(exc))
        return exc.exit_code
    except OSError as exc:  # a read-only or full disk: one line, not a traceback
        from ..errors import storage_error

        failure = storage_error(exc)
        if failure is None:
            raise
        error(str(failure))
        return failure.exit_code
    except KeyboardInterrupt:
        error("interrupted")
        return EXIT_INTERRUPTED


def entry() -> None:
    """The ``pipekit`` console script and ``python -m pipekit``."""
    sys.exit(main())
