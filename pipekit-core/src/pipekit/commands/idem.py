"""``pipekit idem list | show KEY | forget KEY... | sweep``: the records of an
idempotency store (the pipeline's, or a folder's)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from ..errors import EXIT_FAILED, EXIT_OK, PipekitError
from ._common import add_common, add_file, error, print_json


class NoRecord(PipekitError):
    """``show`` or ``forget`` of a key that has no live record."""


def add_parser(sub: Any) -> None:
    idem = sub.add_parser(
        "idem",
        help="list, show, forget or sweep idempotency records",
        description=(
            "The records of the idempotency store: the pipeline's (its [backend], "
            "or --backend), or the file store in --dir. With neither a pipeline file nor "
            "--dir: $PIPEKIT_IDEMPOTENCY_DIR, else ./.pipekit/idempotency (where "
            "@pipekit.idempotent keeps its records by default)."
        ),
    )
    add_common(idem)
    actions = idem.add_subparsers(dest="idem_command", metavar="ACTION", required=True)

    def leaf(name: str, help: str) -> argparse.ArgumentParser:
        p = actions.add_parser(name, help=help, description=help)
        add_file(p)
        p.add_argument(
            "--dir",
            type=Path,
            default=None,
            metavar="PATH",
            help="a file idempotency store's folder (instead of the pipeline's store)",
        )
        add_common(p)
        p.add_argument("--json", action="store_true", help="print JSON on stdout")
        return p

    p = leaf("list", "list the live records, sorted by key")
    p.add_argument("--prefix", default="", metavar="TEXT", help="only keys that start with TEXT")
    p.set_defaults(handler=main_list)
    p = leaf("show", "show one record: state, times, fingerprint, owner, result or error")
    p.add_argument("key", metavar="KEY")
    p.set_defaults(handler=main_show)
    p = leaf("forget", "remove records: the next call (or run, for a stage) runs again")
    p.add_argument("keys", nargs="+", metavar="KEY")
    p.set_defaults(handler=main_forget)
    p = leaf("sweep", "remove expired records and temp files left by killed writers")
    p.set_defaults(handler=main_sweep)


def _file(args: argparse.Namespace) -> Path | None:
    """The pipeline file named or found here, or None."""
    if getattr(args, "file", None) is not None:
        return args.file  # type: ignore[no-any-return]
    from ..config import DEFAULT_FILES

    for name in DEFAULT_FILES:
        if Path(name).is_file():
            return Path(name)
    return None


def manager(args: argparse.Namespace) -> Any:
    from ..idempotency import IdempotencyManager, open_store

    if args.dir is not None:
        if not args.dir.is_dir():
            raise PipekitError(f"{args.dir}: no such folder (--dir names a file store's folder)")
        return IdempotencyManager(open_store(args.dir))
    file = _file(args)
    if file is None:
        if getattr(args, "backend", None) not in (None, "file"):
            from ..config import find_pipeline_file

            find_pipeline_file()  # the error: --backend needs a pipeline
        return IdempotencyManager(open_store(None))
    from ..runner import make_backends
    from ._common import load_for_run

    args.file = file
    pipeline, registry = load_for_run(args)
    return IdempotencyManager(make_backends(registry, pipeline).idempotency)


def _when(t: float | None) -> str:
    if t is None:
        return "never"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def _left(s: Any) -> str:
    ttl = s.ttl_left
    if ttl is None:
        return "never"
    if ttl >= 86400:
        return f"{ttl / 86400:.1f}d"
    if ttl >= 3600:
        return f"{ttl / 3600:.1f}h"
    if ttl >= 60:
        return f"{ttl / 60:.1f}m"
    return f"{ttl:.0f}s"


def main_list(args: argparse.Namespace) -> int:
    mgr = manager(args)
    statuses = list(mgr.list(args.prefix))
    if args.json:
        print_json([s.to_json(with_result=False) for s in statuses])
        return EXIT_OK
    for s in statuses:
        print(f"{s.state:<8} {_when(s.created)}  expires in {_left(s):<6}  {s.key}")
    print(f"{len(statuses)} record(s) in {mgr.store!r}")
    return EXIT_OK


def main_show(args: argparse.Namespace) -> int:
    mgr = manager(args)
    s = mgr.get(args.key)
    if s.state == "ABSENT":
        raise NoRecord(
            f"no live record for key {args.key!r} in {mgr.store!r} "
            "(pipekit idem list shows the keys)"
        )
    if args.json:
        print_json(s.to_json())
        return EXIT_OK
    from .. import _json

    print(f"key:          {s.key}")
    print(f"state:        {s.state}")
    print(f"fingerprint:  {s.fingerprint}")
    print(f"created:      {_when(s.created)}")
    print(f"updated:      {_when(s.updated)}")
    print(f"expires:      {_when(s.expires)} (in {_left(s)})")
    if s.owner:
        print(f"owner:        {s.owner}")
    if s.error is not None:
        err = s.error if isinstance(s.error, dict) else {"message": s.error}
        retry = " (retryable)" if err.get("retryable") else ""
        print(f"error:        {err.get('type', 'Error')}: {err.get('message', '')}{retry}")
    if s.state == "SUCCESS":
        print("result:       " + _json.dumps(s.result).decode())
    return EXIT_OK


def main_forget(args: argparse.Namespace) -> int:
    mgr = manager(args)
    gone: list[str] = []
    missing: list[str] = []
    for key in args.keys:
        (gone if mgr.forget(key) else missing).append(key)
    if args.json:
        print_json({"forgotten": gone, "missing": missing})
    else:
        for key in gone:
            print(f"forgot {key}")
    for key in missing:
        error(f"no live record for key {key!r} in {mgr.store!r} (pipekit idem list shows the keys)")
    return EXIT_FAILED if missing else EXIT_OK


def main_sweep(args: argparse.Namespace) -> int:
    mgr = manager(args)
    removed = mgr.sweep()
    if args.json:
        print_json({"removed": removed})
    else:
        print(f"removed {removed} expired record(s) from {mgr.store!r}")
    return EXIT_OK


__all__ = ["add_parser", "main_list", "main_show", "main_forget", "main_sweep"]
