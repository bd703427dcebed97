"""``pipekit runs list | show [RUN]``: the recorded runs."""

from __future__ import annotations

import argparse
from datetime import datetime
from pathlib import Path
from typing import Any

from ..errors import EXIT_OK
from ._common import add_common, add_file, printable

__all__ = ["add_parser", "state_dir_of", "duration_of"]


def add_parser(sub: Any) -> None:
    runs = sub.add_parser(
        "runs",
        help="list the recorded runs, or show one: its stages, when and where they ran, errors",
        description="The recorded runs (the newest 200): list them, or show one.",
    )
    add_file(runs)
    add_common(runs)
    actions = runs.add_subparsers(dest="runs_command", metavar="ACTION")

    def action(name: str, help: str) -> argparse.ArgumentParser:
        p = actions.add_parser(name, help=help, description=help)
        add_file(p)
        add_common(p)
        p.add_argument("--json", action="store_true", help="print JSON on stdout")
        return p

    listing = action("list", "list the recorded runs, newest first (the default action)")
    listing.add_argument(
        "-n", "--limit", type=int, default=20, metavar="N", help="the N newest (default 20; 0: all)"
    )
    show = action("show", "show one run: its stages, reasons, durations, where they ran, errors")
    show.add_argument("run", nargs="?", default="latest", metavar="RUN", help="a run id or 'latest' (the default)")  # fmt: skip
    runs.set_defaults(handler=main, json=False, limit=20)


def state_dir_of(args: argparse.Namespace) -> Path:
    """The pipeline's state folder (from its cached plan when valid)."""
    from ..plan import _plan_cache as plancache
    from ..plan._config import find_pipeline_file
    from ._common import load

    pipeline = plancache.load(args.file or find_pipeline_file(), args.backend)
    if pipeline is None:
        pipeline, _ = load(args)
    return Path(pipeline.state_dir)


def duration_of(record: dict[str, Any]) -> float | None:
    """Its duration; a killed or running run's: to its last ended stage."""
    if record.get("duration_s") is not None:
        return float(record["duration_s"])
    end = record.get("last_stage_ended_at")
    if not end or not record.get("started_at"):
        return None
    return (_when(end) - _when(record["started_at"])).total_seconds()


def _when(iso: str) -> datetime:
    return datetime.fromisoformat(iso.replace("Z", "+00:00"))


def main(args: argparse.Namespace) -> int:
    state_dir = state_dir_of(args)
    if getattr(args, "runs_command", None) == "show":
        return _show(args, state_dir)
    return _list(args, state_dir)


def _list(args: argparse.Namespace, state_dir: Path) -> int:
    from ..state._run_history import list_runs, load_run, stage_counts

    runs = list_runs(state_dir)
    if args.limit > 0:
        runs = runs[: args.limit]
    rows: list[dict[str, Any]] = []
    for run in runs:
        try:
            record = load_run(run)
        except Exception as exc:  # one damaged record: listed as such
            rows.append({"run_id": run.run_id, "status": "damaged", "error": str(exc)})
            continue
        rows.append(
            {
                "run_id": run.run_id,
                "pipeline": record.get("pipeline"),
                "started_at": record.get("started_at"),
                "status": record.get("status"),
                "counts": stage_counts(record),
                "duration_s": duration_of(record),
            }
        )
    if args.json:
        from ._common import print_json

        print_json({"runs": rows})  # (print_json adds schema_version)
    elif not args.quiet:
        _print_list(rows, state_dir)
    return EXIT_OK


def _print_list(rows: list[dict[str, Any]], state_dir: Path) -> None:
    if not rows:
        print(f"no run is recorded in {state_dir / 'runs'}")
        return
    table = [("RUN", "STARTED (UTC)", "STATUS", "STAGES", "DURATION")]
    for row in rows:
        counts = row.get("counts") or {}
        started = (row.get("started_at") or "")[:19].replace("T", " ")
        table.append(
            (
                printable(row["run_id"]),
                started,
                printable(str(row["status"])),
                ", ".join(f"{n} {status}" for status, n in counts.items()),
                _seconds(row.get("duration_s")),
            )
        )
    widths = [max(len(r[i]) for r in table) for i in range(4)]
    for r in table:
        print("  ".join(c.ljust(w) for c, w in zip(r[:4], widths)) + "  " + r[4])


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}s"


def _show(args: argparse.Namespace, state_dir: Path) -> int:
    from ..state._run_history import find_run, load_run

    record = load_run(find_run(state_dir, args.run))
    if args.json:
        from ._common import print_json

        print_json(
            {"run_id": record["run_id"],
             "status": record.get("status"), "run": record}
        )  # fmt: skip
    elif not args.quiet:
        _print_run(record)
    return EXIT_OK


def _print_run(record: dict[str, Any]) -> None:
    code = record.get("exit_code")
    print(
        f"run {printable(record['run_id'])} of {printable(str(record.get('pipeline')))}: "
        f"{record.get('status')}" + (f" (exit {code})" if code is not None else "")
    )
    print(
        f"  started {record.get('started_at')}, ended {record.get('ended_at') or '-'}, "
        f"took {_seconds(duration_of(record))}; host {printable(str(record.get('host')))}, "
        f"pid {record.get('pid')}, jobs {record.get('jobs')}, backend {record.get('backend')}"
    )
    stages = record.get("stages", [])
    width = max((len(printable(s["name"])) for s in stages), default=4)
    for stage in stages:
        where = f"slot {stage['slot']}" if stage.get("slot") is not None else "-"
        if stage.get("host") not in (None, record.get("host")):
            where += f"@{printable(stage['host'])}"
        print(
            f"  {stage['status']:<8} {printable(stage['name']):<{width}}  "
            f"{_seconds(stage.get('duration_s')):>8}  {where:<7}  {printable(stage.get('reason') or '')}"
        )
        _print_error(stage)
    ended = {s["name"] for s in stages}
    missing = [g["name"] for g in record.get("graph", []) if g["name"] not in ended]
    if missing and record.get("status") in ("killed", "running"):
        shown = ", ".join(printable(n) for n in missing[:10])
        more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
        print(f"  not ended: {shown}{more}")
    metrics = record.get("metrics") or {}
    if metrics:
        print("  metrics: " + ", ".join(f"{k} {v}" for k, v in sorted(metrics.items())))


def _print_error(stage: dict[str, Any]) -> None:
    info = stage.get("info") or {}
    if stage.get("error") and stage["error"] not in (stage.get("reason") or ""):
        print(f"      error: {printable(stage['error'])}")
    for key in ("traceback", "stderr"):
        text = info.get(key)
        if text and stage.get("status") == "failed":
            print(f"      {key}:")
            for line in str(text).rstrip().splitlines():
                print(f"        {printable(line)}")
