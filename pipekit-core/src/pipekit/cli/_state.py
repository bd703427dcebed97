"""``pipekit state show | history | backups | restore``: look at and repair a
:class:`~pipekit.PipelineState` file: by default the pipeline's own
``<state_dir>/state.json``, or any file with ``--path``."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

from ..errors import EXIT_OK
from ._common import add_common, print_json

DEFAULT_LOCK_TIMEOUT = 10.0
DEFAULT_LIMIT = 20


def _add_target(p: argparse.ArgumentParser, *, top: bool) -> None:
    """Options accepted after ``state`` and after its subcommand alike."""
    p.add_argument(
        "-f",
        "--file",
        type=Path,
        default=argparse.SUPPRESS,
        help="the pipeline whose state to use (default: pipekit.toml, pipeline.toml or "
        "pipeline.json here)",
    )
    p.add_argument(
        "--path",
        type=Path,
        default=None if top else argparse.SUPPRESS,
        metavar="FILE",
        help="any PipelineState file instead of the pipeline's state.json",
    )
    p.add_argument(
        "--lock-timeout",
        type=float,
        default=DEFAULT_LOCK_TIMEOUT if top else argparse.SUPPRESS,
        metavar="SECONDS",
        help=f"give up (exit 3) when the state's lock is held longer (default: "
        f"{DEFAULT_LOCK_TIMEOUT:g})",
    )


def add_parser(sub: Any) -> None:
    state = sub.add_parser(
        "state",
        help="show, audit and restore the state file (history, backups, restore)",
        description="Look at a PipelineState file, its transaction log and its backups, and "
        "restore a backup. By default the pipeline's own state.json; --path names any "
        "PipelineState file.",
    )
    _add_target(state, top=True)
    add_common(state)
    actions = state.add_subparsers(dest="state_command", metavar="COMMAND")
    actions.required = True

    show = actions.add_parser("show", help="print the current state")
    history = actions.add_parser("history", help="list the logged transactions, newest first")
    backups = actions.add_parser("backups", help="list the backups, newest first")
    restore = actions.add_parser(
        "restore",
        help="make a backup the current state (the newest that parses by default)",
    )
    restore.add_argument(
        "backup",
        nargs="?",
        metavar="BACKUP",
        help="a backup's name (from `pipekit state backups`) or path",
    )
    for p in (history, backups):
        p.add_argument(
            "-n",
            "--limit",
            type=int,
            default=DEFAULT_LIMIT,
            metavar="N",
            help=f"list at most N (default: {DEFAULT_LIMIT}; 0 for all)",
        )
    for p in (show, history, backups):
        p.add_argument("--json", action="store_true", help="print JSON on stdout")
    for p in (show, history, backups, restore):
        _add_target(p, top=False)
        add_common(p)
    state.set_defaults(handler=main)


def open_state(args: argparse.Namespace) -> Any:
    """The PipelineState the command works on."""
    from ..errors import ConfigError
    from ..state._pipeline_state import PipelineState
    from ..state._runner_state import runner_state_file, state_file_name

    timeout = args.lock_timeout
    if timeout is not None and timeout < 0:
        raise ConfigError("--lock-timeout must be 0 or more seconds")
    if args.path is not None:
        return PipelineState(args.path, lock_timeout=timeout)
    from ..plan._config import find_pipeline_file, read_pipeline_file

    # Only state_dir is needed: no plugin is loaded, so a pipeline whose
    # plugins are broken can still have its state looked at and restored.
    file = (args.file or find_pipeline_file()).resolve()
    data = read_pipeline_file(file)
    state_dir = data.get("state_dir", ".pipekit")
    if not isinstance(state_dir, str):
        raise ConfigError(f"{file}: field 'state_dir': expected a string")
    state = runner_state_file(
        Path(os.path.normpath(file.parent / state_dir)), state_file_name(file)
    )
    state.lock_timeout = timeout
    return state


def main(args: argparse.Namespace) -> int:
    commands = {"show": show, "history": history, "backups": backups, "restore": restore}
    return commands[args.state_command](open_state(args), args)


def _when(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "-"


def _limit(args: argparse.Namespace) -> int | None:
    from ..errors import ConfigError

    if args.limit < 0:
        raise ConfigError("--limit must be 0 (all) or more")
    return args.limit or None


def show(state: Any, args: argparse.Namespace) -> int:
    from ..state._pipeline_state import _checksum, encode

    raw = state._read_shared()
    data = state._parse(raw)
    if args.json:
        doc: dict[str, Any] = {"path": str(state.path), "exists": raw is not None}
        if raw is not None:
            doc.update(
                bytes=len(raw),
                checksum=_checksum(raw),
                written=os.stat(state.path).st_mtime,
            )
        doc["data"] = data if raw is not None else None
        print_json(doc)
        return EXIT_OK
    if raw is None:
        print(f"{state.path}: no state yet (the file does not exist)")
        return EXIT_OK
    written = _when(os.stat(state.path).st_mtime)
    print(f"{state.path}: {len(raw)} bytes, written {written}")
    print(encode(data).decode(), end="")
    return EXIT_OK


def history(state: Any, args: argparse.Namespace) -> int:
    entries = state.history(_limit(args))
    if args.json:
        print_json({"transactions": [e.to_json() for e in entries]})
        return EXIT_OK
    if not entries:
        print(f"{state.log_path}: no transactions logged yet")
        return EXIT_OK
    for e in entries:
        if not e.success:
            outcome = f"FAILED   {e.error}"
        elif not e.changed:
            outcome = "unchanged"
        else:
            outcome = f"ok       {e.bytes} bytes {(e.checksum or '')[:19]}"
            if e.restored_from:
                outcome += f" from {Path(e.restored_from).name}"
            if e.backup:
                outcome += f"; backup {e.backup}"
        who = (
            f"pid {e.pid} on {e.host}" if e.pid is not None else "(found, not logged by its writer)"
        )
        print(f"{_when(e.time)}  {e.operation:<11}  {who}  {outcome}")
    return EXIT_OK


def backups(state: Any, args: argparse.Namespace) -> int:
    from .. import _json

    listed = state.list_backups(_limit(args))
    rows = []
    for b in listed:
        try:
            _json.loads(b.path.read_bytes())
            parses = True
        except (OSError, ValueError):
            parses = False
        rows.append((b, parses))
    if args.json:
        print_json({"backups": [{**b.to_json(), "parses": parses} for b, parses in rows]})
        return EXIT_OK
    if not rows:
        print(f"{state.backup_dir}: no backups yet")
        return EXIT_OK
    width = max(len(b.name) for b, _ in rows)
    for b, parses in rows:
        note = "" if parses else "  does not parse"
        print(f"  {b.name:<{width}}  {_when(b.time)}  {b.size:>9} bytes{note}")
    print(f"{len(rows)} backup(s) in {state.backup_dir}, newest first")
    return EXIT_OK


def restore(state: Any, args: argparse.Namespace) -> int:
    entry = state.restore_backup(args.backup)
    source = entry.restored_from
    if not entry.changed:
        print(f"{state.path} already holds the content of {source}; nothing changed")
        return EXIT_OK
    kept = f"; the content it replaced is kept as backup {entry.backup}" if entry.backup else ""
    print(f"restored {state.path} from {source}{kept}")
    return EXIT_OK
