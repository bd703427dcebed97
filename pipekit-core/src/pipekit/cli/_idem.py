"""``pipekit idem list | show KEY | forget KEY... | sweep``: the records of an
idempotency store (the pipeline's, or a folder's)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from ..errors import EXIT_FAILED, EXIT_OK, ConfigError, PipekitError
from ._common import add_common, add_file, error, print_json, printable


class NoRecord(PipekitError):
    """``show`` or ``forget`` of a key that has no live record."""


class UsageError(ConfigError):
    """Wrong arguments for an action (exit 2)."""


ACTIONS = {
    "list": "list the live records, sorted by key",
    "show": "show one record: state, times, fingerprint, owner, result or error",
    "forget": "remove records: the next call (or run, for a stage) runs again",
    "sweep": "remove expired records and temp files left by killed writers",
}


def add_parser(sub: Any) -> None:
    # One parser, not one per action: building the parser is on the path of
    # every pipekit command (a no-op run included), and sub-parsers cost.
    idem = sub.add_parser(
        "idem",
        help="list, show, forget or sweep idempotency records",
        usage="pipekit idem {list [--prefix TEXT] | show KEY | forget KEY... | sweep} [options]",
        description=(
            "The records of the idempotency store: the pipeline's (its [backend], "
            "or --backend), or the file store in --dir. With neither a pipeline file nor "
            "--dir: $PIPEKIT_IDEMPOTENCY_DIR, else ./.pipekit/idempotency (where "
            "@pipekit.idempotent keeps its records by default). Actions: "
            + "; ".join(f"{name}: {text}" for name, text in ACTIONS.items())
        ),
    )
    idem.add_argument("action", choices=tuple(ACTIONS), metavar="ACTION", help="|".join(ACTIONS))
    idem.add_argument("keys", nargs="*", metavar="KEY", help="the key(s) of show and forget")
    add_file(idem)
    idem.add_argument(
        "--dir",
        type=Path,
        default=None,
        metavar="PATH",
        help="a file idempotency store's folder (instead of the pipeline's store)",
    )
    idem.add_argument(
        "--prefix", default=None, metavar="TEXT", help="list: only keys that start with TEXT"
    )
    add_common(idem)
    idem.add_argument("--json", action="store_true", help="print JSON on stdout")
    idem.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    action = args.action
    n = len(args.keys)
    if action == "show" and n != 1:
        raise UsageError("pipekit idem show takes exactly one KEY")
    if action == "forget" and n == 0:
        raise UsageError("pipekit idem forget takes one KEY or more")
    if action in ("list", "sweep") and n:
        raise UsageError(f"pipekit idem {action} takes no KEY (got {' '.join(args.keys)})")
    if args.prefix is not None and action != "list":
        raise UsageError("--prefix goes with pipekit idem list")
    handler = {"list": main_list, "show": main_show, "forget": main_forget, "sweep": main_sweep}
    return handler[action](args)


def manager(args: argparse.Namespace) -> Any:
    from ..idempotency import IdempotencyManager, open_store

    if args.dir is not None:
        if not args.dir.is_dir():
            raise PipekitError(f"{args.dir}: no such folder (--dir names a file store's folder)")
        return IdempotencyManager(open_store(args.dir))
    from ..plan._config import DEFAULT_FILES

    file = args.file or next((Path(n) for n in DEFAULT_FILES if Path(n).is_file()), None)
    if file is None:
        name = getattr(args, "backend", None)
        if name in (None, "file"):
            return IdempotencyManager(open_store(None))
        return IdempotencyManager(_store_of_backend(name))
    from ..stores._assemble import make_backends
    from ._common import load_for_run

    args.file = file
    pipeline, registry = load_for_run(args)
    return IdempotencyManager(make_backends(registry, pipeline).idempotency)


def _store_of_backend(name: str) -> Any:
    """The idempotency store of backend ``name`` with no options (its own
    defaults and environment, e.g. ``$PIPEKIT_REDIS_URL``): ``--backend``
    without a pipeline file, as ``pipekit doctor`` takes it."""
    from ..plugins._manager import load_registry
    from ..stores._assemble import build_backends

    registry = load_registry()
    if name not in registry.backend_names():
        raise ConfigError(f"--backend: {registry.unknown_backend_message(name)}")
    return build_backends(registry, name, {}, Path(".pipekit").resolve()).idempotency


def _where(store: Any) -> str:
    """A store for people: its folder, or what it says of itself."""
    root = getattr(store, "root", None)
    return f"the file store {root}" if root is not None else printable(repr(store))


def _when(t: float | None) -> str:
    return "never" if t is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def _no_record(key: str, store: Any) -> str:
    return (
        f"no live record for key {printable(repr(key))} in {_where(store)} "
        "(pipekit idem list shows the keys)"
    )


def _left(s: Any) -> str:
    ttl = s.ttl_left
    if ttl is None:
        return "never"
    for size, unit in ((86400, "d"), (3600, "h"), (60, "m")):
        if ttl >= size:
            return f"{ttl / size:.1f}{unit}"
    return f"{ttl:.0f}s"


def main_list(args: argparse.Namespace) -> int:
    mgr = manager(args)
    statuses = list(mgr.list(args.prefix or ""))
    if args.json:
        print_json({"records": [s.to_json(with_result=False) for s in statuses]})
        return EXIT_OK
    for s in statuses:
        print(f"{s.state:<8} {_when(s.created)}  expires in {_left(s):<6}  {printable(s.key)}")
    print(f"{len(statuses)} record(s) in {_where(mgr.store)}")
    return EXIT_OK


def main_show(args: argparse.Namespace) -> int:
    mgr = manager(args)
    key = args.keys[0]
    s = mgr.get(key)
    if s.state == "ABSENT":
        raise NoRecord(_no_record(key, mgr.store))
    if args.json:
        print_json(s.to_json())
        return EXIT_OK
    from .. import _json

    print(f"key:          {printable(s.key)}")
    print(f"state:        {s.state}")
    print(f"fingerprint:  {printable(s.fingerprint or '')}")
    print(f"created:      {_when(s.created)}")
    print(f"updated:      {_when(s.updated)}")
    print(f"expires:      {_when(s.expires)} (in {_left(s)})")
    if s.owner:
        print(f"owner:        {printable(s.owner)}")
    if s.error is not None:
        err = s.error if isinstance(s.error, dict) else {"message": s.error}
        retry = " (retryable)" if err.get("retryable") else ""
        text = f"{err.get('type', 'Error')}: {err.get('message', '')}"
        print(f"error:        {printable(text)}{retry}")
    if s.state == "SUCCESS":
        print("result:       " + printable(_json.dumps(s.result).decode()))
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
            print(f"forgot {printable(key)}")
    for key in missing:
        error(_no_record(key, mgr.store))
    return EXIT_FAILED if missing else EXIT_OK


def main_sweep(args: argparse.Namespace) -> int:
    mgr = manager(args)
    removed = mgr.sweep()
    if args.json:
        print_json({"removed": removed})
    else:
        print(f"removed {removed} expired record(s) from {_where(mgr.store)}")
    return EXIT_OK


__all__ = ["add_parser", "main"]
