"""The ``pipekit`` command.

argparse (the standard library's, well kept) rather than click or typer: a
no-op ``pipekit run`` is measured against peers, and argparse costs a few
milliseconds to import where click costs tens.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from . import __version__
from .errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, PipekitError

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
  pipekit plugins                  installed plugins and what they register
"""


def _add_file(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-f",
        "--file",
        type=Path,
        default=argparse.SUPPRESS,
        help="the pipeline file (default: pipekit.toml, pipeline.toml or pipeline.json here)",
    )
    p.add_argument(
        "--backend",
        default=argparse.SUPPRESS,
        metavar="NAME",
        help="backend for locks, idempotency and checkpoints (overrides [backend].name)",
    )


def _add_common(p: argparse.ArgumentParser) -> None:
    """Options accepted before or after the command (``pipekit -q run`` and
    ``pipekit run -q`` alike)."""
    top = p.prog == "pipekit"
    p.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text" if top else argparse.SUPPRESS,
        help="format of log lines on stderr (default: text)",
    )
    p.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0 if top else argparse.SUPPRESS,
        help="more log output (-vv: debug)",
    )
    p.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=False if top else argparse.SUPPRESS,
        help="print only errors",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pipekit",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"pipekit {__version__}")
    parser.add_argument("-f", "--file", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--backend", default=None, help=argparse.SUPPRESS)
    _add_common(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="run the pipeline: skip what is up to date, run the rest",
        description="Run every stage that is not up to date, in dependency order.",
    )
    _add_file(run)
    _add_common(run)
    run.add_argument(
        "-j",
        "--jobs",
        type=int,
        default=1,
        metavar="N",
        help="run up to N independent stages at once (default: 1)",
    )
    run.add_argument(
        "--json",
        action="store_true",
        help="print one JSON summary on stdout (run_id, status, stages)",
    )
    run.add_argument(
        "--force",
        action="append",
        default=[],
        metavar="STAGE",
        help="run STAGE even if it is up to date (repeatable; 'all' for every stage)",
    )
    run.add_argument(
        "--dry-run", action="store_true", help="say what would run and why; run nothing"
    )
    run.add_argument(
        "-k",
        "--keep-going",
        action="store_true",
        help="after a failure, go on with stages that do not depend on it",
    )
    run.add_argument(
        "--lock-timeout",
        type=float,
        default=600.0,
        metavar="SECONDS",
        help="give up (exit 3) when a stage's lock is held longer (default: 600)",
    )

    status = sub.add_parser(
        "status",
        help="say for each stage whether it is up to date or would run, and why",
        description="For each stage: up to date, or will run and why. Runs nothing.",
    )
    _add_file(status)
    _add_common(status)
    status.add_argument("--json", action="store_true", help="print JSON on stdout")

    plugins = sub.add_parser(
        "plugins",
        help="list installed plugins and what they registered",
        description="Every plugin: its distribution, version, hooks and registered names.",
    )
    _add_common(plugins)
    plugins.add_argument("--json", action="store_true", help="print JSON on stdout")
    return parser


def _setup_logging(args: argparse.Namespace) -> None:
    level = logging.WARNING
    if args.quiet:
        level = logging.ERROR
    elif args.verbose >= 2:
        level = logging.DEBUG
    elif args.verbose == 1:
        level = logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    if args.log_format == "json":
        from .logfmt import JsonFormatter

        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("pipekit: %(levelname)s: %(message)s"))
    root = logging.getLogger("pipekit")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    _setup_logging(args)
    try:
        if args.command == "run":
            return _cmd_run(args)
        if args.command == "status":
            return _cmd_status(args)
        if args.command == "plugins":
            return _cmd_plugins(args)
        parser.error(f"unknown command {args.command!r}")
    except PipekitError as exc:
        _error(str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        _error("interrupted")
        return EXIT_INTERRUPTED
    return EXIT_OK


def _error(message: str) -> None:
    for line in message.splitlines() or [""]:
        print(f"pipekit: error: {line}", file=sys.stderr)


def _load(args: argparse.Namespace) -> tuple[Any, Any]:
    from .config import find_pipeline_file
    from .pipeline import load_pipeline
    from .plugins import load_registry

    file = args.file or find_pipeline_file()
    registry = load_registry()
    pipeline = load_pipeline(file, registry, backend_override=args.backend)
    return pipeline, registry


def _load_for_run(args: argparse.Namespace) -> tuple[Any, Any]:
    """A cached plan when one is valid (registry None: plugins load only if
    a stage must run), else a full load that is then cached."""
    from . import plancache
    from .config import find_pipeline_file

    file = args.file or find_pipeline_file()
    cached = plancache.load(file, args.backend)
    if cached is not None:
        return cached, None
    pipeline, registry = _load(args)
    plancache.store(pipeline, registry, args.backend)
    return pipeline, registry


def _forced(args: argparse.Namespace, pipeline: Any) -> tuple[frozenset[str], bool]:
    names = set(args.force)
    force_all = "all" in names
    names.discard("all")
    unknown = sorted(names - set(pipeline.stages))
    if unknown:
        from .errors import ConfigError

        raise ConfigError(
            f"--force: unknown stage {unknown[0]!r}; stages: {', '.join(pipeline.order)}"
        )
    return frozenset(names), force_all


def _install_signal_handlers() -> None:
    """SIGINT/SIGTERM: the first one stops the run gracefully (exit 130);
    a second one stops at once."""
    count = 0

    def handler(signum: int, _frame: Any) -> None:
        nonlocal count
        count += 1
        if count > 1:
            os._exit(EXIT_INTERRUPTED)
        raise KeyboardInterrupt()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def _cmd_run(args: argparse.Namespace) -> int:
    from .runner import Runner, RunOptions

    pipeline, registry = _load_for_run(args)
    force, force_all = _forced(args, pipeline)
    if args.jobs < 1:
        from .errors import ConfigError

        raise ConfigError("--jobs must be 1 or more")
    if args.dry_run:
        return _print_plan(args, pipeline, registry, force, force_all, dry_run=True)
    options = RunOptions(
        jobs=args.jobs,
        force=force,
        force_all=force_all,
        keep_going=args.keep_going,
        lock_timeout=args.lock_timeout,
    )
    from .report import Reporter

    reporter = Reporter(sys.stdout, enabled=not args.json and not args.quiet)
    runner = Runner(pipeline, registry, options, on_result=reporter.stage)
    reporter.start(pipeline, runner)
    _install_signal_handlers()
    outcome = runner.run()
    if args.json:
        from . import _json

        sys.stdout.write(_json.dumps(outcome.summary(pipeline.name)).decode() + "\n")
    else:
        reporter.end(outcome)
    if outcome.status == "interrupted":
        print(
            "pipekit: interrupted; run the same command again to go on where it stopped",
            file=sys.stderr,
        )
    elif outcome.status == "failed" and not args.quiet:
        for r in outcome.results:
            if r.status == "failed":
                _error(f"stage {r.name!r}: {r.reason}")
    return outcome.exit_code


def _print_plan(
    args: argparse.Namespace,
    pipeline: Any,
    registry: Any,
    force: frozenset[str],
    force_all: bool,
    *,
    dry_run: bool,
) -> int:
    from .fingerprint import Evaluator
    from .hashcache import HashCache
    from .runner import make_backends
    from .state import RunnerState
    from .status import plan

    backends = make_backends(registry, pipeline)
    state = RunnerState(pipeline.state_dir)
    cache = HashCache(pipeline.state_dir / "hashcache.json")
    evaluator = Evaluator(pipeline, cache, backends.idempotency, state)
    statuses = plan(pipeline, evaluator, forced=lambda n: force_all or n in force)
    if args.json:
        from . import _json

        doc = {
            "pipeline": pipeline.name,
            "dry_run": dry_run,
            "stages": [s.to_json() for s in statuses],
        }
        sys.stdout.write(_json.dumps(doc).decode() + "\n")
        return EXIT_OK
    width = max(len(s.name) for s in statuses)
    for s in statuses:
        label = "would run" if dry_run and s.status == "will-run" else s.status
        print(f"  {label:<11} {s.name:<{width}}  {s.reason}")
    n = sum(1 for s in statuses if s.status == "will-run")
    verb = "would run" if dry_run else "will run"
    print(f"{pipeline.name}: {n} of {len(statuses)} stage(s) {verb}")
    return EXIT_OK


def _cmd_status(args: argparse.Namespace) -> int:
    pipeline, registry = _load_for_run(args)
    return _print_plan(args, pipeline, registry, frozenset(), False, dry_run=False)


def _cmd_plugins(args: argparse.Namespace) -> int:
    from .plugins import load_registry

    registry = load_registry()
    if args.json:
        from . import _json

        sys.stdout.write(_json.dumps(registry.to_json(), indent=True).decode() + "\n")
        return EXIT_OK
    for p in registry.plugins:
        print(f"{p.name}  ({p.distribution} {p.version}, {p.module})")
        for kind, names in sorted(p.registered.items()):
            print(f"    {kind}: {', '.join(sorted(names))}")
    if registry.disabled:
        print(f"disabled: {', '.join(registry.disabled)}")
    return EXIT_OK
