"""``pipekit report [RUN] [-o FILE]``: one run as one self-contained HTML
page (see :mod:`._report_page`). Not the line-per-stage output of
``pipekit run``, which is :mod:`._stage_lines`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..errors import EXIT_OK
from ._common import add_common, add_file, printable


def add_parser(sub: Any) -> None:
    report = sub.add_parser(
        "report",
        help="write one run as a self-contained HTML page: its DAG, timeline, stages and metrics",
        description=(
            "Write one run (the latest by default) as one HTML file that fetches nothing "
            "when opened: the pipeline's DAG coloured by each stage's status, a timeline "
            "of the stages on their job slots, per-stage details and the run's metrics."
        ),
    )
    add_file(report)
    add_common(report)
    report.add_argument("run", nargs="?", default="latest", metavar="RUN", help="a run id or 'latest' (the default)")  # fmt: skip
    report.add_argument("-o", "--output", type=Path, metavar="FILE", help="where to write it (default: pipekit-report-RUN.html here)")  # fmt: skip
    report.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    from ..state._run_history import find_run, load_run
    from ._report_page import render
    from ._runs import duration_of, state_dir_of

    record = load_run(find_run(state_dir_of(args), args.run))
    page = render(record, duration_of(record))
    output = args.output or Path(f"pipekit-report-{record['run_id']}.html")
    output.write_text(page, encoding="utf-8")
    if not args.quiet:
        print(f"wrote {printable(str(output))} (run {printable(str(record['run_id']))})")
    return EXIT_OK
