"""``pipekit dlq list | show ID | retry | purge``: the dead-letter queue."""

from __future__ import annotations

import argparse
import time
from typing import Any

from ..errors import EXIT_FAILED, EXIT_OK, ConfigError
from ._common import add_common, add_file, load, load_for_run, notice, print_json, printable


def add_parser(sub: Any) -> None:
    dlq = sub.add_parser(
        "dlq",
        help="list, show, retry or purge the records that record stages dead-lettered",
        description="The dead-letter queue: records whose processing kept failing.",
    )
    add_file(dlq)
    add_common(dlq)
    actions = dlq.add_subparsers(dest="dlq_command", metavar="ACTION")

    def action(name: str, help: str) -> argparse.ArgumentParser:
        p = actions.add_parser(name, help=help, description=help)
        add_file(p)
        add_common(p)
        p.add_argument("--json", action="store_true", help="print JSON on stdout")
        return p

    for name, text in (
        ("list", "list the dead letters (oldest stage position first)"),
        ("retry", "run dead letters through their processor again; append what succeeds"),
        ("purge", "delete dead letters without retrying them"),
    ):
        action(name, text).add_argument("--stage", metavar="STAGE", help="only those of STAGE")
    p = action("show", "show one dead letter, with its record and traceback")
    p.add_argument("id", type=int, metavar="ID", help="the dead letter's id (see `dlq list`)")
    dlq.set_defaults(handler=main, json=False)


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def _one_line(text: str, width: int = 70) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def _show(letter: Any) -> None:
    """One dead letter for people. Everything from the record is printed
    with the characters a terminal acts on escaped (a poison record must not
    retitle or clear the terminal)."""
    from ..engine._dead_letter_queue import record_text

    print(
        f"dead letter {letter.id} of stage {printable(letter.stage)!s} "
        f"(pipeline {printable(letter.pipeline)})"
    )
    print(f"  input:        {printable(letter.input)}, line {letter.line}, byte {letter.offset}")
    print(f"  run:          {printable(letter.run_id)}")
    print(f"  error:        {printable(f'{letter.error_type}: {letter.message}')}")
    print(f"  attempts:     {letter.attempts}")
    print(f"  first failed: {_when(letter.first_failed)}")
    print(f"  last failed:  {_when(letter.last_failed)}")
    print(f"  format:       {printable(letter.format)}")
    print(f"  record:       {printable(record_text(letter))}")
    print("  traceback:")
    for line in letter.traceback.rstrip().splitlines():
        print(f"    {printable(line)}")


def _recover(pipeline: Any, backends: Any) -> None:
    from ..engine._dead_letter_queue import recover_intents

    for line in recover_intents(pipeline, backends):
        notice(line)


def main(args: argparse.Namespace) -> int:
    from ..engine._dead_letter_queue import letter_json

    command = getattr(args, "dlq_command", None)
    if command is None:
        raise ConfigError("pipekit dlq: name an action: list, show ID, retry or purge")
    if command == "retry":
        return _retry(args)
    pipeline, registry = load_for_run(args)
    from ..stores._assemble import make_backends

    backends = make_backends(registry, pipeline)
    store = backends.dead_letters
    if command == "purge":
        _recover(pipeline, backends)
        n = store.purge(pipeline.name, stage=args.stage)
        if args.json:
            print_json({"pipeline": pipeline.name, "stage": args.stage, "purged": n})
        else:
            where = f" of stage {args.stage!r}" if args.stage else ""
            print(f"purged {n} dead letter(s){where}")
        return EXIT_OK
    if command == "show":
        letter = store.get(pipeline.name, args.id)
        if letter is None:
            raise ConfigError(
                f"no dead letter {args.id} in pipeline {pipeline.name!r}; `pipekit dlq list` "
                "lists them"
            )
        if args.json:
            print_json(letter_json(letter, traceback=True))
        else:
            _show(letter)
        return EXIT_OK
    letters = store.list(pipeline.name, stage=args.stage)
    if args.json:
        print_json({"pipeline": pipeline.name, "letters": [letter_json(x) for x in letters]})
        return EXIT_OK
    if not letters:
        where = f" of stage {args.stage!r}" if args.stage else ""
        print(f"no dead letters{where}")
        return EXIT_OK
    rows = [
        (
            str(x.id),
            printable(x.stage),
            printable(f"{x.input}:{x.line} (byte {x.offset})"),
            str(x.attempts),
            _when(x.last_failed),
            printable(_one_line(f"{x.error_type}: {x.message}")),
        )
        for x in letters
    ]
    head = ("ID", "STAGE", "WHERE", "TRIES", "LAST FAILED", "ERROR")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(5)]
    for r in [head, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r[:5], widths)) + "  " + r[5])
    print(f"{len(letters)} dead letter(s); `pipekit dlq show ID` shows one")
    return EXIT_OK


def _retry(args: argparse.Namespace) -> int:
    import attrs

    from ..engine._dead_letter_queue import retry_dead_letters
    from ..engine._decisions import Evaluator
    from ..state._hash_cache import HashCache
    from ..state._runner_state import RunnerState, state_file_name
    from ..stores._assemble import make_backends

    pipeline, registry = load(args)
    if args.stage is not None and args.stage not in pipeline.stages:
        raise ConfigError(
            f"--stage: unknown stage {args.stage!r}; stages: {', '.join(pipeline.order)}"
        )
    backends = make_backends(registry, pipeline)
    _recover(pipeline, backends)
    evaluator = Evaluator(
        pipeline,
        HashCache(pipeline.state_dir / "hashcache.json"),
        backends.idempotency,
        RunnerState(pipeline.state_dir, state_file_name(pipeline.file)),
    )
    reports = retry_dead_letters(
        pipeline, backends, evaluator, stages=[args.stage] if args.stage else None
    )
    failed = any(r.still_failing or r.skipped for r in reports)
    if args.json:
        stages = [attrs.asdict(r) for r in reports]
        print_json(
            {"pipeline": pipeline.name, "status": "failed" if failed else "ok", "stages": stages}
        )
        return EXIT_FAILED if failed else EXIT_OK
    if not reports:
        print("no dead letters to retry")
    for r in reports:
        if r.skipped:
            print(f"stage {r.stage!r}: not retried: {r.skipped}")
            continue
        line = f"stage {r.stage!r}: retried {r.retried} dead letter(s): {r.succeeded} succeeded"
        if r.output:
            line += f", {r.appended_records} record(s) appended to {r.output}"
        if r.still_failing:
            line += f"; {r.still_failing} still failing (kept in the queue)"
        print(line)
        if r.outdated:
            print(
                f"  {r.outdated} dead letter(s) of an earlier execution (other inputs, params or "
                f"processor version) were left alone; `pipekit dlq purge --stage {r.stage}` "
                "removes them"
            )
        if r.output:
            downstream = sorted(pipeline.downstream_of([r.stage]) - {r.stage})
            if downstream:
                print(
                    f"  the next `pipekit run` reruns {', '.join(downstream)} (their input changed)"
                )
    return EXIT_FAILED if failed else EXIT_OK
