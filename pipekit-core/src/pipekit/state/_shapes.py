"""The shapes of what pipekit reads back from its own storage, checked in one
place per record kind: idempotency records (and the runner's stage results
inside them), the runner's stage entries in ``state.json``, and the notes
``pipekit dlq retry`` leaves. (Hash cache entries are checked where they
are used, in :mod:`pipekit.state._hash_cache`.)

A file (or Redis value) can parse and still have the wrong shape: a torn
write, a hand edit, another program's file under our name. Such a record is
*damaged*: the reader treats it as absent (the work it stood for reruns) and
says so once per file and process, naming the file (:func:`warn_damaged`).
Nothing here raises anything but :class:`DamagedRecord`.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from typing import Any

__all__ = [
    "DamagedRecord",
    "idem_record_fields",
    "check_stage_entry",
    "check_stage_result",
    "stage_record",
    "check_retry_intent",
    "warn_damaged",
    "move_aside",
]

log = logging.getLogger("pipekit.state")

IDEM_STATES = frozenset({"PENDING", "SUCCESS", "FAILED"})

_warned: set[str] = set()
_warned_lock = threading.Lock()


class DamagedRecord(ValueError):
    """A stored record that parses but does not have its kind's shape."""


def _is_number(value: Any) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and abs(value) < 1e15  # a time or a count, not an overflow
    )


def _need(ok: bool, what: str) -> None:
    if not ok:
        raise DamagedRecord(what)


def _optional_str(data: dict[str, Any], name: str) -> None:
    value = data.get(name)
    _need(value is None or isinstance(value, str), f"{name!r} is not a string")


def _optional_number(data: dict[str, Any], name: str) -> None:
    value = data.get(name)
    _need(value is None or _is_number(value), f"{name!r} is not a number")


def _string_map(value: Any, name: str) -> None:
    _need(
        isinstance(value, dict)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()),
        f"{name!r} is not an object of strings",
    )


def idem_record_fields(data: Any, known: frozenset[str]) -> dict[str, Any]:
    """The fields of an idempotency record (``IdemRecord(**fields)``) from
    its decoded JSON (fields it does not know, a newer writer's, left
    out); :class:`DamagedRecord` when its shape is wrong."""
    _need(isinstance(data, dict), "it is not a JSON object")
    _need(isinstance(data.get("key"), str) and bool(data["key"]), "'key' is not a string")
    _need(data.get("status") in IDEM_STATES, f"'status' is not one of {sorted(IDEM_STATES)}")
    _need(isinstance(data.get("fingerprint"), str), "'fingerprint' is not a string")
    for name in ("created", "updated"):
        _need(_is_number(data.get(name, 0.0)), f"{name!r} is not a number")
    _optional_number(data, "expires")
    token = data.get("token")
    _need(token is None or (isinstance(token, int) and not isinstance(token, bool)), "bad 'token'")
    _optional_str(data, "owner")
    _optional_str(data, "fence")
    error = data.get("error")
    _need(error is None or isinstance(error, (dict, str)), "'error' is not an object")
    return {name: value for name, value in data.items() if name in known}


def check_stage_result(result: Any) -> None:
    """The result the runner stores with a stage's SUCCESS."""
    _need(isinstance(result, dict), "the stage result is not an object")
    _string_map(result.get("outputs"), "outputs")
    for name in ("by", "stage", "run_id"):
        _optional_str(result, name)


def stage_record(store: Any, key: str) -> Any:
    """The idempotency record of a stage's key from ``store``, None when
    absent or damaged (its stored result is not what the runner stores: a
    store keeps any JSON, so this kind is checked where it is read)."""
    record = store.get(key)
    if record is None or record.status != "SUCCESS":
        return record
    try:
        check_stage_result(record.result)
    except DamagedRecord as exc:
        path_for = getattr(store, "path_for", None)
        where = path_for(key) if path_for is not None else f"the record of {key!r} in {store!r}"
        warn_damaged(where, str(exc), "read as absent; the stage reruns")
        return None
    return record


_ENTRY_TEXT = (
    "fingerprint",
    "status",
    "processor",
    "version",
    "code",
    "params_sha",
    "store_gen",
    "key",
    "run_id",
)


def check_stage_entry(entry: Any) -> None:
    """One stage's entry in the runner's ``state.json`` (written without
    helper calls: a no-op rerun checks every stage's entry)."""
    _need(isinstance(entry, dict), "it is not an object")
    for name in _ENTRY_TEXT:
        value = entry.get(name)
        if value is not None and type(value) is not str:
            raise DamagedRecord(f"{name!r} is not a string")
    for name in ("finished_at", "duration_s"):
        value = entry.get(name)
        if value is not None and not _is_number(value):
            raise DamagedRecord(f"{name!r} is not a number")
    for name in ("inputs", "outputs"):
        value = entry.get(name)
        if value is not None:
            _string_map(value, name)


def check_retry_intent(intent: Any) -> None:
    """The note ``pipekit dlq retry`` leaves before it replaces an output."""
    _need(isinstance(intent, dict), "it is not a JSON object")
    for name in ("pipeline", "stage", "output", "path", "sha256", "key", "fingerprint"):
        _need(isinstance(intent.get(name), str), f"{name!r} is not a string")
    ids = intent.get("ids")
    _need(
        isinstance(ids, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in ids),
        "'ids' is not a list of numbers",
    )
    token = intent.get("token")
    _need(token is None or (isinstance(token, int) and not isinstance(token, bool)), "bad 'token'")


def warn_damaged(where: Any, why: str, consequence: str = "read as absent") -> None:
    """Say once per process that the record at ``where`` is damaged."""
    name = os.fspath(where) if isinstance(where, os.PathLike) else str(where)
    with _warned_lock:
        if name in _warned:
            return
        _warned.add(name)
    log.warning("%s is damaged (%s): %s", name, why, consequence)


def move_aside(path: str | os.PathLike[str]) -> str:
    """Rename a damaged file or folder at ``path`` out of the way (kept for
    a look, never deleted); the new name."""
    aside = f"{os.fspath(path)}.damaged-{time.strftime('%Y%m%dT%H%M%S')}-{os.urandom(3).hex()}"
    os.rename(path, aside)
    return aside
