"""The ``pipekit`` command (argparse rather than click or typer: a few
milliseconds to import where click costs tens, on every no-op run)."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from pathlib import Path
from typing import NoReturn

from .. import __version__
from .._log_lines import configure
from ..errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, PipekitError
from ._commands import COMMANDS
from ._common import OUTPUT, add_common, error, stdout_gone

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


class _Parser(argparse.ArgumentParser):
    """argparse's parser, whose usage errors are one JSON line with
    ``--log-format json`` (its sub-parsers are of this class too)."""

    def error(self, message: str) -> NoReturn:
        if not OUTPUT.json_log:
            super().error(message)
        error(f"{self.prog}: {message}", usage=self.format_usage().strip())
        sys.exit(EXIT_USAGE)


def _json_log_asked(words: list[str]) -> bool:
    """Whether the command line asks for ``--log-format json`` (looked at
    before parsing, so that a usage error is said in JSON too)."""
    pairs = zip(words, [*words[1:], ""])
    return "--log-format=json" in words or ("--log-format", "json") in pairs


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole command line, or with ``only`` that one command's part
    (building all of them costs every run about 15 ms)."""
    parser = _Parser(
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
    verbose = min(args.verbose, 2)
    level = logging.ERROR if args.quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[verbose]
    configure(args.log_format, level)


def main(argv: list[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    # `pipekit COMMAND ...`: only that command's parser; anything else (help,
    # options before the command, a typo) gets the whole one.
    only = words[0] if words and words[0] in COMMANDS else None
    OUTPUT.json_log = _json_log_asked(words)
    parser = build_parser(only)
    if "_ARGCOMPLETE" in os.environ:  # a shell asking for completions (`pipekit completion`)
        from ._completion import complete

        complete(parser)
    args = parser.parse_args(argv)
    OUTPUT.json_log = args.log_format == "json"
    if args.command is None:
        if OUTPUT.json_log:
            error("no command given; `pipekit --help` lists them")
        else:
            parser.print_help(sys.stderr)
        return EXIT_USAGE
    _setup_logging(args)
    OUTPUT.quiet = args.quiet
    if not args.quiet:
        return _handle(args)
    # -q: only errors. What commands print on stdout goes to a null file;
    # data (a --json document) goes to the real stdout (see data_stdout).
    OUTPUT.data, sys.stdout = sys.stdout, open(os.devnull, "w")  # noqa: SIM115
    try:
        return _handle(args)
    finally:
        sys.stdout.close()
        sys.stdout, OUTPUT.data = OUTPUT.data, None


def _handle(args: argparse.Namespace) -> int:
    """Run the command's handler; pipekit's errors said in one line, each
    with its exit code."""
    try:
        return int(args.handler(args))
    except PipekitError as exc:
        error(str(exc))
        return exc.exit_code
    except BrokenPipeError:  # stdout's reader went away: nothing more to say
        stdout_gone()
        return EXIT_FAILED
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
    except Exception as exc:
        if not OUTPUT.json_log:
            raise  # a bug: Python's traceback
        import traceback

        error(f"unexpected error: {type(exc).__name__}: {exc}", traceback=traceback.format_exc())
        return EXIT_FAILED


def entry() -> None:
    """The ``pipekit`` console script and ``python -m pipekit``."""
    sys.exit(main())
