"""``pipekit status`` (and the plan ``pipekit run --dry-run`` prints)."""

from __future__ import annotations

import argparse
from typing import Any

from ..engine._plan_view import statuses as stage_statuses
from ..errors import EXIT_FAILED, EXIT_OK
from ..plan import _plan_cache as plancache
from ..plan._config import find_pipeline_file
from ._common import add_common, add_file, add_targets, load, print_json


def add_parser(sub: Any) -> None:
    status = sub.add_parser(
        "status",
        help="say for each stage whether it is up to date or would run, and why",
        description="For each stage: up to date, or will run and why. Runs nothing.",
    )
    add_file(status)
    add_common(status)
    add_targets(status)
    status.add_argument("--json", action="store_true", help="print JSON on stdout")
    status.add_argument(
        "--exit-code",
        action="store_true",
        help="exit 1 when a stage would run (0 when every stage is up to date): for CI",
    )
    status.set_defaults(handler=main)


def print_plan(
    args: argparse.Namespace,
    pipeline: Any,
    registry: Any,
    force: frozenset[str],
    force_all: bool,
    *,
    dry_run: bool,
    fail_if_any_runs: bool = False,
) -> int:
    statuses = stage_statuses(pipeline, registry, forced=lambda n: force_all or n in force)
    n = sum(1 for s in statuses if s.status == "will-run")
    code = EXIT_FAILED if n and fail_if_any_runs else EXIT_OK
    if args.json:
        stages = [s.to_json() for s in statuses]
        print_json({"pipeline": pipeline.name, "dry_run": dry_run, "stages": stages})
        return code
    width = max(len(s.name) for s in statuses)
    for s in statuses:
        label = "would run" if dry_run and s.status == "will-run" else s.status
        print(f"  {label:<11} {s.name:<{width}}  {s.reason}")
    verb = "would run" if dry_run else "will run"
    print(f"{pipeline.name}: {n} of {len(statuses)} stage(s) {verb}")
    return code


def main(args: argparse.Namespace) -> int:
    # A cached plan when one is valid; never one written: status writes nothing.
    pipeline = plancache.load(args.file or find_pipeline_file(), args.backend)
    registry = None
    if pipeline is None:
        pipeline, registry = load(args)
    from ..plan._targets import select

    pipeline = select(pipeline, args.targets, downstream=args.downstream)
    return print_plan(
        args, pipeline, registry, frozenset(), False, dry_run=False, fail_if_any_runs=args.exit_code
    )
