"""``pipekit checkpoints list | show | verify | restore | prune``: the
checkpoints of a pipeline's stages, in its configured checkpoint store."""

from __future__ import annotations

import argparse
from typing import Any, NamedTuple

from ..errors import EXIT_FAILED, EXIT_OK, ConfigError
from ._common import add_common, add_file, print_json


def _add_target(p: argparse.ArgumentParser, top: bool) -> None:
    """Options accepted before or after the action (``pipekit checkpoints
    --stage s list`` and ``pipekit checkpoints list --stage s`` alike)."""
    d = None if top else argparse.SUPPRESS
    if not top:
        add_file(p)
    for flag, metavar, text in (
        ("--stage", "STAGE", "the checkpoints of this stage (default: every stage of the pipeline)"),
        ("--namespace", "NS", "a checkpoint namespace by name, e.g. one a script saved into (instead of --stage)"),
        ("--key-file", "PATH", "the key of encrypted checkpoints, from a file"),
        ("--key-env", "VAR", "the key of encrypted checkpoints, from an environment variable"),
    ):  # fmt: skip
        p.add_argument(flag, default=d, metavar=metavar, help=text)
    p.add_argument(
        "--json",
        action="store_true",
        default=False if top else argparse.SUPPRESS,
        help="print JSON on stdout",
    )
    add_common(p)


def add_parser(sub: Any) -> None:
    cp = sub.add_parser(
        "checkpoints",
        help="list, show, verify, restore and prune checkpoints",
        description=(
            "The checkpoints that stages saved in the pipeline's checkpoint store. "
            "Each stage has its own namespace (<pipeline>.<stage>)."
        ),
    )
    add_file(cp)
    _add_target(cp, top=True)
    actions = cp.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True

    # fmt: off
    def action(name: str, help: str) -> argparse.ArgumentParser:
        p = actions.add_parser(name, help=help)
        _add_target(p, top=False)
        return p

    latest = "a checkpoint id, or 'latest'"
    p = action("list", "list checkpoints with their metadata")
    p.add_argument("--sort", default="seq", metavar="FIELD", help="seq (default), id, time, size, stored_size or chain; --sort=-FIELD for descending")
    p.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE", help="only checkpoints whose metadata KEY equals VALUE (JSON, else text); repeatable")
    p.add_argument("--all", action="store_true", help="include replaced checkpoints kept only as delta bases")
    action("show", "show one checkpoint's metadata").add_argument("id", metavar="ID", help=latest)
    p = action("verify", "check every stored checkpoint (or one) against its SHA-256")
    p.add_argument("id", metavar="ID", nargs="?", help="only this checkpoint and its bases")
    p = action("restore", "write a checkpoint's state to a file")
    p.add_argument("id", metavar="ID", help=latest)
    p.add_argument("--to", required=True, metavar="FILE", help="where to write the state (JSON, or the bytes saved); '-' for stdout")
    p.add_argument("--force", action="store_true", help="overwrite FILE if it exists")
    p = action("prune", "delete old checkpoints and orphan blobs")
    p.add_argument("--keep-last", type=int, default=None, metavar="N", help="keep the N newest checkpoints")
    p.add_argument("--max-age", type=float, default=None, metavar="DAYS", help="delete checkpoints older than DAYS days")
    p.add_argument("--dry-run", action="store_true", help="say what would be deleted; delete nothing")
    # fmt: on
    cp.set_defaults(handler=main)


class _Target(NamedTuple):
    """One namespace to work on: the stage it belongs to (if any) and its manager."""

    namespace: str
    stage: str | None
    manager: Any

    def label(self) -> str:
        return f"stage {self.stage!r}" if self.stage else f"namespace {self.namespace!r}"


def _targets(args: argparse.Namespace, pipeline: Any, store: Any) -> list[_Target]:
    from ..checkpoints import CheckpointManager
    from ..plugins._processors import stage_namespace

    if args.key_file and args.key_env:
        raise ConfigError("give --key-file or --key-env, not both")
    encryption = {"key_file": args.key_file} if args.key_file else None
    if args.key_env:
        encryption = {"key_env": args.key_env}

    def manager(ns: str) -> Any:
        return CheckpointManager(store, ns, encryption=encryption)

    if args.namespace and args.stage:
        raise ConfigError("give --stage or --namespace, not both")
    if args.namespace:
        return [_Target(args.namespace, None, manager(args.namespace))]
    names = list(pipeline.order)
    if args.stage:
        if args.stage not in pipeline.stages:
            raise ConfigError(
                f"no stage {args.stage!r} in {pipeline.name!r}; stages: {', '.join(names)}"
            )
        names = [args.stage]
    namespaces = [(stage_namespace(pipeline.name, name), name) for name in names]
    return [_Target(ns, name, manager(ns)) for ns, name in namespaces]


def _find(targets: list[_Target], id: str) -> _Target:
    """The one target that holds checkpoint ``id`` (``latest``: the one
    target with checkpoints, or the only target)."""
    from ..checkpoints import CheckpointNotFound

    if id == "latest":
        having = [t for t in targets if t.manager.latest() is not None]
        if len(targets) == 1 or len(having) == 1:
            return having[0] if having else targets[0]
        if not having:
            raise CheckpointNotFound("no checkpoints in any stage")
        raise ConfigError(
            "'latest' is ambiguous: "
            + ", ".join(t.label() for t in having)
            + " have checkpoints; name one with --stage"
        )
    having = [t for t in targets if t.manager.list(filter={"id": id})]
    if not having:
        where = targets[0].label() if len(targets) == 1 else "any stage"
        raise CheckpointNotFound(f"no checkpoint {id!r} in {where}", id)
    if len(having) > 1:
        raise ConfigError(
            f"checkpoint {id!r} is in "
            + ", ".join(t.label() for t in having)
            + "; name one with --stage"
        )
    return having[0]


def _size(n: int) -> str:
    value, unit = float(n), "B"
    for bigger in ("KiB", "MiB", "GiB"):
        if value < 1024:
            break
        value, unit = value / 1024, bigger
    return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"


def _filters(items: list[str]) -> dict[str, Any]:
    from .. import _json

    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--filter {item!r}: expected KEY=VALUE")
        try:
            out[key] = _json.loads(raw)
        except _json.JSONDecodeError:
            out[key] = raw
    return out


def _with_stage(doc: dict[str, Any], t: _Target) -> dict[str, Any]:
    doc["stage"] = t.stage
    return doc


def _list(args: argparse.Namespace, targets: list[_Target], pipeline: Any) -> int:
    filt = _filters(args.filter) or None
    rows = [(t, t.manager.list(sort=args.sort, filter=filt, hidden=args.all)) for t in targets]
    if args.json:
        checkpoints = [_with_stage(e.to_json(), t) for t, es in rows for e in es]
        print_json({"pipeline": pipeline.name, "checkpoints": checkpoints})
        return EXIT_OK
    shown = [(t, es) for t, es in rows if es]
    if not shown:
        print("no checkpoints")
        return EXIT_OK
    from .. import _json

    for t, entries in shown:
        print(f"{t.label()} ({t.namespace}): {len(entries)} checkpoint(s)")
        width = max(len(e.id) for e in entries)
        for e in entries:
            flags = " encrypted" if e.encrypted else ""
            flags += f" base={e.base}" if e.base else ""
            flags += " hidden" if e.hidden else ""
            meta = f"  {_json.dumps(e.metadata).decode()}" if e.metadata else ""
            print(
                f"  {e.id:<{width}}  {e.kind:<5}  {e.to_json()['created']}  {_size(e.size):>10}  "
                f"stored {_size(e.stored_size):>10}{flags}{meta}"
            )
    return EXIT_OK


def _show(args: argparse.Namespace, targets: list[_Target]) -> int:
    t = _find(targets, args.id)
    info = t.manager.info(args.id)
    doc = _with_stage(info.to_json(), t)
    if args.json:
        print_json(doc)
        return EXIT_OK
    order = [
        "id", "stage", "namespace", "created", "kind", "base", "chain", "codec", "type",
        "size", "stored_size", "compression", "level", "encrypted", "key_id", "sha256",
        "blob", "keys", "n_keys", "metadata",
    ]  # fmt: skip
    from .. import _json

    for key in order:
        value = doc.get(key)
        if value is None or value == [] or value == {}:
            continue
        if isinstance(value, (dict, list)):
            value = _json.dumps(value).decode()
        elif key in ("size", "stored_size"):
            value = f"{value} ({_size(value)})"
        print(f"{key + ':':<13} {value}")
    return EXIT_OK


def _verify(args: argparse.Namespace, targets: list[_Target]) -> int:
    if args.id:
        targets = [_find(targets, args.id)]
    reports = [(t, t.manager.verify(args.id)) for t in targets]
    ok = all(r.ok for _t, r in reports)
    if args.json:
        print_json({"ok": ok, "namespaces": [_with_stage(r.to_json(), t) for t, r in reports]})
        return EXIT_OK if ok else EXIT_FAILED
    total = 0
    for t, r in reports:
        if not r.items and r.index_problem is None:
            continue
        total += len(r.items)
        if r.index_problem:
            print(f"DAMAGED  {t.label()}: index: {r.index_problem} (rebuilt from the blobs)")
        for item in r.items:
            if item.ok:
                print(f"ok       {t.label()}: {item.id}")
            else:
                print(f"DAMAGED  {t.label()}: {item.id}: {item.problem}")
        for found, what in ((r.orphans, "orphan blob(s)"), (r.temps, "temp file(s) left by a killed writer")):  # fmt: skip
            if found:
                print(f"note     {t.label()}: {len(found)} {what}; 'pipekit checkpoints prune' removes them")  # fmt: skip
    bad = sum(len(r.damaged) + (r.index_problem is not None) for _t, r in reports)
    if bad:
        from ._common import error

        error(f"{bad} problem(s) in {total} checkpoint(s)")
        return EXIT_FAILED
    print(f"{total} checkpoint(s) verified")
    return EXIT_OK


def _restore(args: argparse.Namespace, targets: list[_Target]) -> int:
    from pathlib import Path

    from .. import _json
    from .._atomic import atomic_write_bytes
    from ._common import data_stdout, error

    t = _find(targets, args.id)
    to = None if args.to == "-" else Path(args.to)
    if to is not None and to.exists() and not args.force:
        raise ConfigError(f"{args.to} exists; use --force to overwrite it")
    loaded = t.manager.load_info(args.id)
    for id, why in loaded.skipped:
        error(f"skipped checkpoint {id!r}: {why}")
    state = loaded.state
    data = state if isinstance(state, bytes) else _json.dumps(state) + b"\n"
    if to is None:
        out = data_stdout()  # the bytes asked for: data, kept with -q
        out.buffer.write(data)  # type: ignore[attr-defined]
        out.flush()
        return EXIT_OK
    atomic_write_bytes(to, data)
    info = loaded.info
    if args.json:
        print_json(_with_stage({**info.to_json(), "to": str(to), "bytes": len(data)}, t))
    else:
        print(f"restored checkpoint {info.id!r} of {t.label()} ({len(data)} bytes) to {to}")
    return EXIT_OK


def _prune(args: argparse.Namespace, targets: list[_Target], pipeline: Any, locks: Any) -> int:
    from ..checkpoints import Retention
    from ..errors import LockTimeout

    if args.keep_last is not None and args.keep_last < 1:
        raise ConfigError("--keep-last must be 1 or more")
    if args.max_age is not None and args.max_age < 0:
        raise ConfigError("--max-age must be 0 or more")
    policy = Retention(keep_last=args.keep_last, max_age_days=args.max_age)
    results = []
    for t in targets:
        lease = None
        if not args.dry_run and t.stage is not None:
            # the runner's lock of the stage: never prune under a running stage
            lease = locks.lock(f"stage/{pipeline.name}/{t.stage}", 60.0)
            if not lease.acquire(timeout=0):
                holder = lease.holder()
                raise LockTimeout(
                    f"stage {t.stage!r} is running"
                    + (f" ({holder})" if holder else "")
                    + "; prune its checkpoints when it is done"
                )
        try:
            results.append((t, t.manager.prune(policy, dry_run=args.dry_run)))
        finally:
            if lease is not None:
                lease.release()
    if args.json:
        namespaces = [_with_stage(r.to_json(), t) for t, r in results]
        print_json({"policy": policy.describe(), "namespaces": namespaces})
        return EXIT_OK
    verb = "would delete" if args.dry_run else "deleted"
    for t, r in results:
        if r.deleted or r.orphans:
            ids = ", ".join(e.id for e in r.deleted) or "no checkpoints"
            extra = f" and {len(r.orphans)} orphan blob(s)" if r.orphans else ""
            print(f"{t.label()}: {verb} {ids}{extra}")
        if r.temps:
            print(f"{t.label()}: {verb} {len(r.temps)} temp file(s) left by a killed writer")
    n = sum(len(r.deleted) for _t, r in results)
    o = sum(len(r.orphans) for _t, r in results)
    print(f"{verb} {n} checkpoint(s) and {o} orphan blob(s) ({policy.describe()})")
    return EXIT_OK


def main(args: argparse.Namespace) -> int:
    from ..stores._assemble import make_backends
    from ._common import load_for_run

    pipeline, registry = load_for_run(args)
    backends = make_backends(registry, pipeline)
    targets = _targets(args, pipeline, backends.checkpoints)
    if args.action == "list":
        return _list(args, targets, pipeline)
    if args.action == "prune":
        return _prune(args, targets, pipeline, backends.locks)
    return {"show": _show, "verify": _verify, "restore": _restore}[args.action](args, targets)
