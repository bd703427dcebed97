"""``pipekit run``."""

from __future__ import annotations

import argparse
import gc
import os
import re
import signal
import sys
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ._common import (
    add_common,
    add_file,
    add_targets,
    error,
    install_signal_handlers,
    load_for_run,
    notice,
    print_json,
)


def add_parser(sub: Any) -> None:
    run = sub.add_parser(
        "run",
        help="run the pipeline: skip what is up to date, run the rest",
        description="Run every stage that is not up to date, in dependency order.",
    )
    add_file(run)
    add_common(run)
    add_targets(run)
    # fmt: off
    run.add_argument("-j", "--jobs", type=int, default=1, metavar="N", help="run up to N independent stages at once (default: 1)")
    run.add_argument("--json", action="store_true", help="print one JSON summary on stdout (run_id, status, stages)")
    run.add_argument("--force", action="append", default=[], metavar="STAGE", help="run STAGE even if it is up to date: a name or a glob pattern (repeatable; 'all' for every stage)")
    run.add_argument("--dry-run", action="store_true", help="say what would run and why; run nothing")
    run.add_argument("-k", "--keep-going", action="store_true", help="after a failure, go on with stages that do not depend on it")
    run.add_argument("--lock-timeout", type=float, default=600.0, metavar="SECONDS", help="give up (exit 3) when a stage's lock is held longer (default: 600)")
    run.add_argument("--allow-network", action="append", default=[], metavar="STAGE", help="let STAGE use the network: no guard, no namespace (repeatable; 'all' for every stage)")
    run.add_argument("--run-id", default=None, metavar="ID", help="name the run ID instead of a time and a random suffix (letters, digits, _ . -)")
    # fmt: on
    run.set_defaults(handler=main)


def stage_names(option: str, values: list[str], pipeline: Any) -> tuple[frozenset[str], bool]:
    """The stages an option names, by name or glob pattern (``all``: every
    stage), checked."""
    from ..plan._targets import matching

    patterns = set(values)
    every = "all" in patterns
    patterns.discard("all")
    return frozenset(matching(option, sorted(patterns), pipeline.order)), every


_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def run_id_option(value: str | None, state_dir: Path) -> str | None:
    """The id ``--run-id`` names, checked: a name a run record can have,
    not the id of a run recorded already (a run id names one run)."""
    if value is None:
        return None
    if not _RUN_ID.fullmatch(value):
        raise ConfigError(
            f"--run-id {value!r}: 1 to 64 letters, digits, '_', '.' or '-', "
            "starting with a letter or a digit"
        )
    for record in (state_dir / "runs" / f"{value}.json", state_dir / "runs" / f"{value}.jsonl"):
        if record.exists():
            raise ConfigError(
                f"--run-id {value!r}: a run with that id is recorded already ({record})"
            )
    return value


def main(args: argparse.Namespace) -> int:
    from ..engine import Runner

    interrupts = install_signal_handlers()
    _pwd_is_cwd()
    # The cyclic GC is off while the plan is built, and what loading made is
    # then frozen (it lives as long as the run), so that collections do not
    # walk the plan again and again (1,000 shell stages: 0.89 s -> 0.82 s).
    gc.disable()
    try:
        pipeline, registry = load_for_run(args)
    finally:
        gc.freeze()
        gc.enable()
    from ..plan._targets import select

    pipeline = select(pipeline, args.targets, downstream=args.downstream)
    options = run_options(args, pipeline)
    run_id = run_id_option(args.run_id, pipeline.state_dir)
    if args.dry_run:
        from ._status import print_plan

        return print_plan(args, pipeline, registry, options.force, options.force_all, dry_run=True)
    from .._private_files import check_writable

    check_writable(pipeline.state_dir)  # a read-only or full disk: one line, before any work
    from ._progress import ProgressDisplay, colour_wanted, wanted
    from ._stage_lines import Reporter, running_after

    json_log = args.log_format == "json"
    show = wanted(quiet=args.quiet, json=args.json, json_log=json_log)
    display = ProgressDisplay(len(pipeline.order)) if show else None
    reporter = Reporter(
        None,
        enabled=not args.json and not args.quiet,
        display=display,
        colour=colour_wanted(sys.stdout),
        after=running_after(),
    )
    runner = Runner(
        pipeline, registry, options, run_id=run_id, on_result=reporter.stage, progress=display
    )
    runner.services.on_start = reporter.started
    interrupts.runner = runner
    reporter.start(pipeline, runner)
    try:
        outcome = runner.run()
    finally:
        reporter.close()
        if display is not None:
            display.close()
    # The run is over and recorded: a signal now must not cost its summary.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if args.json:
        print_json(outcome.summary(pipeline.name))
    else:
        reporter.end(outcome)
    say_outcome(outcome, verbose=bool(args.verbose))
    return int(outcome.exit_code)


def run_options(args: argparse.Namespace, pipeline: Any) -> Any:
    """The ``RunOptions`` the command line asks for, checked."""
    from ..engine import RunOptions
    from ..plan._config import check_duration

    force, force_all = stage_names("--force", args.force, pipeline)
    allow_network, allow_network_all = stage_names("--allow-network", args.allow_network, pipeline)
    if args.jobs < 1:
        raise ConfigError("--jobs must be 1 or more")
    check_duration("--lock-timeout", args.lock_timeout)
    return RunOptions(
        jobs=args.jobs,
        force=force,
        force_all=force_all,
        keep_going=args.keep_going,
        lock_timeout=args.lock_timeout,
        allow_network=allow_network,
        allow_network_all=allow_network_all,
    )


def say_outcome(outcome: Any, *, verbose: bool) -> None:
    """On stderr, also with -q: how to go on after an interrupt, or each
    failed stage's error (its traceback with -v)."""
    if outcome.status == "interrupted":
        resumable = [
            f"stage {r.name!r} resumes from record {r.info['checkpoint_record']:,}"
            for r in outcome.results
            if r.info.get("checkpoint_record") is not None
        ]
        notice(
            "interrupted; run the same command again to go on where it stopped"
            + (f" ({'; '.join(resumable)})" if resumable else ""),
            even_quiet=True,
        )
    elif outcome.status == "failed":  # errors: said with -q too
        for r in outcome.results:
            if r.status == "failed":
                trace = r.info.get("traceback") if verbose else None
                error(f"stage {r.name!r}: {r.reason}", traceback=trace)


def _pwd_is_cwd() -> None:
    """Make ``PWD`` name the folder the run works in, as a shell's does: a
    command started without the shell then inherits the environment as it
    is, with no copy of it made for each command (see ``shell``)."""
    try:
        cwd = os.getcwd()
    except OSError:  # the folder is gone: nothing to name
        return
    pwd = os.environ.get("PWD")
    try:
        same = pwd is not None and os.path.samefile(pwd, cwd)
    except OSError:
        same = False
    if not same:
        os.environ["PWD"] = cwd
