"""``pipekit.PipelineState``: a JSON state file changed only by transactions.

Beside the state file ``NAME`` live:

- ``NAME.lock``: the lock (see :mod:`pipekit.state._lock`): exclusive for a
  transaction, shared for a read; it names its last exclusive holder.
- ``NAME.backups/``: the previous contents, newest kept (``max_backups``).
- ``NAME.history.jsonl``: the transaction log (see :mod:`pipekit.state._log`).

A commit, under the exclusive lock: validate; back up the current file; write
the new content to a temp file beside it, fsync it, rename it over the file;
log; make the folders and the log durable; drop the oldest backups. The file
is never modified in place, so a backup is a hard link to it (a copy where
the file system has no hard links). A reader sees the old content or the new
one, never a mix; a kill at any instant leaves one or the other.
"""

from __future__ import annotations

import calendar
import contextlib
import hashlib
import logging
import os
import re
import shlex
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import orjson

from .._atomic import TEMP_MARK, atomic_write_bytes, sync_files, unlink_quietly, write_and_replace
from .._private_files import FILE_MODE, make_private_dir
from .._structuring import structure
from ..errors import StateError, StateReadError, StateValidationError
from ._lock import HOST, StateLock
from ._log import StateLogEntry, append_entry, last_content_checksum, read_log

__all__ = ["PipelineState", "StateTransaction", "StateBackup", "StateLogEntry"]

log = logging.getLogger("pipekit.state")

# Sorted keys and a two-space indent: a state file diffs well and is easy to
# read or fix by hand. No silent conversions: a datetime, a dataclass, a set
# or a non-string key is an error, not a different value read back later.
_DUMP_OPTIONS = (
    orjson.OPT_INDENT_2
    | orjson.OPT_SORT_KEYS
    | orjson.OPT_APPEND_NEWLINE
    | orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_DATACLASS
)
_STAMP_RE = re.compile(r"\.(\d{8}T\d{6})\.(\d{6})Z")

# (state path, thread id) of every transaction open in this process
_open: set[tuple[str, int]] = set()
_open_lock = threading.Lock()


def encode(data: Any) -> bytes:
    """The bytes a state file holds for ``data``."""
    try:
        return orjson.dumps(data, option=_DUMP_OPTIONS)
    except orjson.JSONEncodeError as exc:
        raise StateValidationError(
            f"the state data is not plain JSON ({exc}); use dicts with string keys, "
            "lists, strings, numbers, booleans and None",
            problems=[("$", str(exc))],
        ) from None


@attrs.define(repr=False)
class StateTransaction:
    """What :meth:`PipelineState.transaction` yields: change or replace
    ``data`` (a deep copy of the file's content); it is written when the
    ``with`` block ends without an exception."""

    data: Any
    path: Path

    def __repr__(self) -> str:
        return f"<StateTransaction {self.path}>"


@attrs.frozen
class StateBackup:
    """One backup of a state file."""

    path: Path
    time: float  #: when the backup was made (seconds since the epoch)
    written: float  #: when its content was written (its modification time)
    size: int

    @property
    def name(self) -> str:
        return self.path.name

    def to_json(self) -> dict[str, Any]:
        return {**attrs.asdict(self), "path": str(self.path), "name": self.name}


class PipelineState:
    """A JSON state file changed only by transactions: locked, validated,
    backed up, written atomically and durably, and logged.

    ``schema`` is an attrs class (the data must structure into it with
    cattrs, unknown keys refused) or a callable that raises (or returns
    False) to refuse the data. ``max_backups`` previous contents are kept
    when ``backup_before_write``. ``lock_timeout`` is in seconds (None: wait
    for ever) and applies to reads (shared lock) and transactions (exclusive).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        schema: type | Callable[[Any], Any] | None = None,
        max_backups: int = 50,
        backup_before_write: bool = True,
        lock_timeout: float | None = 10.0,
    ) -> None:
        if isinstance(max_backups, bool) or not isinstance(max_backups, int) or max_backups < 0:
            raise ValueError(f"max_backups must be an integer >= 0, not {max_backups!r}")
        if lock_timeout is not None and not lock_timeout >= 0:
            raise ValueError(f"lock_timeout must be >= 0 seconds or None, not {lock_timeout!r}")
        if schema is not None and not callable(schema):  # an attrs class is callable too
            raise TypeError(
                f"schema must be an attrs class or a callable, not {type(schema).__name__}"
            )
        if isinstance(schema, type) and attrs.has(schema):
            try:
                attrs.resolve_types(schema)
            except NameError as exc:
                raise TypeError(
                    f"schema {schema.__name__}: cannot resolve its annotations ({exc}); "
                    "define the classes it uses at module level"
                ) from None
        self.path = Path(os.path.abspath(path))
        self.schema = schema
        self.max_backups = max_backups
        self.backup_before_write = backup_before_write
        self.lock_timeout = lock_timeout
        name = self.path.name
        self.lock_path = self.path.with_name(name + ".lock")
        self.log_path = self.path.with_name(name + ".history.jsonl")
        self.backup_dir = self.path.with_name(name + ".backups")
        stem, dot, suffix = name.rpartition(".")
        if not stem:  # no suffix (or a dot file like ".state")
            stem, dot, suffix = name, "", ""
        self._backup_prefix = stem + "."
        self._backup_suffix = dot + suffix
        # One temp file name per state file: only the holder of the exclusive
        # lock writes it, so a killed writer's leftover is simply replaced by
        # the next commit (no sweeping, never more than one).
        self._tmp = self.path.with_name(f".{name}{TEMP_MARK}commit")

    def __repr__(self) -> str:
        return f"PipelineState({str(self.path)!r})"

    # -- reading -------------------------------------------------------------

    def read(self) -> Any:
        """The current data (a fresh copy); ``{}`` when the file does not
        exist yet. Raises :class:`StateReadError` when it does not parse."""
        return self._parse(self._read_shared())

    def _read_shared(self) -> bytes | None:
        if self._open_here():
            return self._read_raw()  # this thread holds the exclusive lock
        if not self.path.parent.is_dir():
            return None
        lock = StateLock(self.lock_path, self.path, self.lock_timeout)
        try:
            lock.acquire(exclusive=False)
        except OSError as exc:  # e.g. a read-only folder: renames keep a lone read whole
            log.debug("%s: reading without the lock (%s)", self.path, exc)
            return self._read_raw()
        try:
            return self._read_raw()
        finally:
            lock.release()

    def _read_raw(self) -> bytes | None:
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            return None
        except IsADirectoryError:
            raise StateReadError(
                f"{self.path} is a folder, not a state file; name a file", path=self.path
            ) from None
        except OSError as exc:
            raise StateReadError(
                f"cannot read {self.path}: {exc.strerror or exc}; check that it is a readable file",
                path=self.path,
            ) from None

    def _parse(self, raw: bytes | None) -> Any:
        if raw is None:
            return {}
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise self._damaged(exc, raw) from None

    def _damaged(self, exc: Exception, raw: bytes) -> StateReadError:
        what = "is empty" if not raw.strip() else f"is not valid JSON ({exc})"
        good = self.newest_good_backup()
        if good is not None:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(good.time))
            hint = (
                f"The newest backup that parses is {good.path} (backed up {when}); "
                f"`pipekit state restore --path {shlex.quote(str(self.path))}` restores it "
                "and keeps the damaged file as a backup."
            )
        else:
            hint = (
                "No backup of it parses: fix it by hand, or replace it with "
                "PipelineState.write() (the damaged content is then kept as a backup)."
            )
        return StateReadError(
            f"state file {self.path} {what}. {hint}",
            path=self.path,
            backup=good.path if good else None,
        )

    # -- transactions --------------------------------------------------------

    @contextlib.contextmanager
    def transaction(self) -> Iterator[StateTransaction]:
        """Lock, read, yield a :class:`StateTransaction`; at the end of the
        ``with`` block validate, back up, write and log ``tx.data``. On an
        exception nothing changes, the failure is logged and the exception
        goes on."""
        with self._exclusive("transaction"):
            raw = self._read_logged("transaction")
            try:
                data = self._parse(raw)
            except StateReadError as exc:
                self._log_failure("transaction", exc)
                raise
            tx = StateTransaction(data, self.path)
            try:
                yield tx
            except BaseException as exc:
                self._log_failure("transaction", exc)
                raise
            self._commit("transaction", tx.data, raw)

    def write(self, data: Any) -> StateLogEntry:
        """Replace the whole content with ``data`` (validated, backed up,
        logged). Works on a damaged file too: its content is kept as a backup."""
        with self._exclusive("write"):
            raw = self._read_logged("write")
            return self._commit("write", data, raw)

    def restore_backup(
        self, backup: str | os.PathLike[str] | StateBackup | None = None
    ) -> StateLogEntry:
        """Make a backup the current content again: ``backup`` is a path, a
        name in the backups folder or a :class:`StateBackup`; None takes the
        newest backup that parses. A transaction like any other: the content
        it replaces is backed up first and it is logged."""
        with self._exclusive("restore"):
            try:
                if backup is None:
                    good = self.newest_good_backup()
                    if good is None:
                        raise StateError(
                            f"no backup of {self.path} to restore (none parses, or there are "
                            "none); see `pipekit state backups`",
                            path=self.path,
                        )
                    source = good.path
                else:
                    source = self._backup_path(backup)
                new_raw, data = self._backup_content(source)
            except StateError as exc:
                self._log_failure("restore", exc)
                raise
            raw = self._read_logged("restore")
            return self._commit("restore", data, raw, new_raw=new_raw, restored_from=str(source))

    @contextlib.contextmanager
    def _exclusive(self, operation: str) -> Iterator[None]:
        key = (str(self.path), threading.get_ident())
        with _open_lock:
            if key in _open:
                raise StateError(
                    f"a transaction on {self.path} is already open in this thread; do this "
                    "work inside it (a nested one would wait for the first for ever)",
                    path=self.path,
                )
            _open.add(key)
        try:
            lock = StateLock(self.lock_path, self.path, self.lock_timeout)
            try:
                lock.acquire(exclusive=True)
            except StateError as exc:
                self._log_failure(operation, exc)
                raise
            except OSError as exc:
                raise StateError(
                    f"cannot lock {self.path}: cannot open {self.lock_path}: "
                    f"{exc.strerror or exc}; check that its folder is writable",
                    path=self.path,
                ) from None
            try:
                yield
            finally:
                lock.release()
        finally:
            with _open_lock:
                _open.discard(key)

    def _open_here(self) -> bool:
        with _open_lock:
            return (str(self.path), threading.get_ident()) in _open

    def _read_logged(self, operation: str) -> bytes | None:
        """The current content, under the exclusive lock; first logs it as
        ``external`` if no logged transaction accounts for it."""
        try:
            raw = self._read_raw()
        except StateError as exc:
            self._log_failure(operation, exc)
            raise
        self._account_for(raw)
        return raw

    def _account_for(self, raw: bytes | None) -> None:
        """The log is written after the commit, so a writer killed in between
        leaves a content no entry accounts for (as does an edit by hand):
        log it now, before it is replaced, so that the log has every content
        the file held."""
        if (None if raw is None else _checksum(raw)) == last_content_checksum(self.log_path):
            return
        try:
            written = os.stat(self.path).st_mtime
        except OSError:
            written = time.time()
        self._append(
            self._entry("external", True, raw, changed=True, time=written, pid=None, host=None)
        )

    # -- validation ----------------------------------------------------------

    def validate(self, data: Any) -> None:
        """Raise :class:`StateValidationError` if ``data`` does not fit the
        schema or is not plain JSON (what a commit checks)."""
        self._validate(data)
        encode(data)

    def _validate(self, data: Any) -> None:
        schema = self.schema
        if schema is None:
            return
        if isinstance(schema, type) and attrs.has(schema):
            _inst, problems = structure(data, schema, "$")
            if problems:
                problems = [(p, m.replace("a table", "an object")) for p, m in problems]
                raise StateValidationError(
                    f"the state data does not fit {schema.__name__}: "
                    + "; ".join(f"{_where(p)}: {m}" for p, m in problems)
                    + ". Nothing was written; fix the data (or the schema) and try again",
                    path=self.path,
                    problems=problems,
                )
            return
        name = getattr(schema, "__qualname__", None) or type(schema).__name__
        try:
            ok = schema(data)
        except StateValidationError:
            raise
        except Exception as exc:
            where = _exception_path(exc)
            message = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            lead = f"{_where(where)}: " if where != "$" else ""
            raise StateValidationError(
                f"the state data was refused by {name}: {lead}{message}. "
                "Nothing was written; fix the data and try again",
                path=self.path,
                problems=[(where, str(exc))],
            ) from exc
        if ok is False:
            raise StateValidationError(
                f"the state data was refused by {name} (it returned False). "
                "Nothing was written; fix the data and try again",
                path=self.path,
                problems=[("$", "refused")],
            )

    # -- committing ----------------------------------------------------------

    def _commit(
        self,
        operation: str,
        data: Any,
        old_raw: bytes | None,
        *,
        new_raw: bytes | None = None,
        restored_from: str | None = None,
    ) -> StateLogEntry:
        try:
            self._validate(data)
            if new_raw is None:
                new_raw = encode(data)
        except StateValidationError as exc:
            self._log_failure(operation, exc)
            raise
        if new_raw == old_raw:
            entry = self._entry(operation, True, new_raw, restored_from=restored_from)
            self._append(entry)
            return entry
        backup: Path | None = None
        existing: list[str] = []
        try:
            if old_raw is not None and self.backup_before_write and self.max_backups > 0:
                backup, existing = self._make_backup(old_raw)
            self._replace(new_raw)
        except BaseException as exc:
            if backup is not None:
                unlink_quietly(backup)
            self._log_failure(operation, exc, restored_from=restored_from)
            if isinstance(exc, OSError):
                raise StateError(
                    f"could not write {self.path}: {exc.strerror or exc}; the state is unchanged. "
                    "Check the free space and permissions of its folder, then try again",
                    path=self.path,
                ) from exc
            raise
        # The log line goes after the rename (a writer killed in between
        # leaves its commit unlogged, and the next transaction logs it as
        # "external"; never a logged commit that did not happen), then one
        # flush makes the rename, the backup link and the log line durable.
        backup_name = backup.name if backup else None
        entry = self._entry(
            operation, True, new_raw, changed=True, backup=backup_name, restored_from=restored_from
        )
        logged = self._append(entry, sync=False)
        durable = [self.path.parent, self.backup_dir] if backup else [self.path.parent]
        try:
            sync_files([*durable, self.log_path] if logged else durable)
        except OSError as exc:
            self._log_failure(operation, exc, restored_from=restored_from)
            raise StateError(
                f"wrote {self.path} but could not make it durable ({exc}): a crash now may "
                "lose this change. Check the disk, then read the state back",
                path=self.path,
            ) from exc
        if backup is not None:
            self._rotate([*existing, backup.name])
        return entry

    def _replace(self, new_raw: bytes) -> None:
        """temp file + fsync + rename (the folder fsync is the caller's)."""
        tmp = self._tmp
        unlink_quietly(tmp)  # left by a writer killed mid-commit
        try:
            mode: int | None = stat.S_IMODE(os.stat(self.path).st_mode)
        except OSError:
            mode = None
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        except FileNotFoundError:
            make_private_dir(self.path.parent)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        if mode is not None:
            try:
                os.fchmod(fd, mode)  # keep the permissions the file had
            except BaseException:
                os.close(fd)
                unlink_quietly(tmp)
                raise
        write_and_replace(fd, tmp, self.path, new_raw)

    # -- backups -------------------------------------------------------------

    def _make_backup(self, old_raw: bytes) -> tuple[Path, list[str]]:
        """Keep the current file in the backups folder: a hard link (the
        file is never changed in place), or a copy of ``old_raw`` where
        links are not supported. Returns (backup, names already there)."""
        existing = self._backup_names()
        for _attempt in range(3):
            now_us = time.time_ns() // 1000
            if existing:  # names sort in time order: keep them strictly increasing
                now_us = max(now_us, _stamp_us(existing[-1]) + 1)
            dest = self.backup_dir / self._backup_name(now_us)
            try:
                self._link_or_copy(dest, old_raw)
                return dest, existing
            except FileExistsError:  # a name another host's clock made: list again
                existing = self._backup_names()
        raise FileExistsError(f"cannot find a free backup name in {self.backup_dir}")

    def _link_or_copy(self, dest: Path, old_raw: bytes) -> None:
        make_private_dir(self.backup_dir)
        try:
            os.link(self.path, dest)
        except FileExistsError:
            raise
        except OSError:  # no hard links on this file system, or the file went (not through us)
            atomic_write_bytes(dest, old_raw, mode=FILE_MODE)

    def _backup_name(self, us: int) -> str:
        """``state.20240501T120000.123456Z.json`` for ``state.json``: names
        sort in time order (UTC, microseconds)."""
        secs, frac = divmod(us, 1_000_000)
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(secs)) + f".{frac:06d}Z"
        return f"{self._backup_prefix}{stamp}{self._backup_suffix}"

    def _backup_names(self) -> list[str]:
        """Names of the backups, oldest first."""
        try:
            names = os.listdir(self.backup_dir)
        except FileNotFoundError:
            return []
        prefix = self._backup_prefix
        return sorted(n for n in names if n.startswith(prefix) and TEMP_MARK not in n)

    def _rotate(self, names: list[str]) -> None:
        """Remove the oldest of ``names`` (oldest first) beyond ``max_backups``."""
        extra = max(0, len(names) - self.max_backups)
        for name in names[:extra]:
            try:
                os.unlink(self.backup_dir / name)
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("could not remove old backup %s: %s", self.backup_dir / name, exc)

    def list_backups(self, limit: int | None = None) -> list[StateBackup]:
        """The backups, newest first (at most ``limit``)."""
        names = self._backup_names()[::-1]
        if limit is not None:
            names = names[: max(0, limit)]
        out = []
        for name in names:
            p = self.backup_dir / name
            try:
                st = os.stat(p)
            except FileNotFoundError:
                continue
            out.append(StateBackup(p, _stamp_us(name) / 1e6, st.st_mtime, st.st_size))
        return out

    def newest_good_backup(self) -> StateBackup | None:
        """The newest backup whose content parses as JSON, or None."""
        for b in self.list_backups():
            try:
                orjson.loads(b.path.read_bytes())
            except (OSError, orjson.JSONDecodeError):
                continue
            return b
        return None

    def load_backup(self, backup: str | os.PathLike[str] | StateBackup) -> Any:
        """The data a backup holds. Raises :class:`StateReadError` if it
        cannot be read or does not parse."""
        return self._backup_content(self._backup_path(backup))[1]

    def _backup_path(self, backup: str | os.PathLike[str] | StateBackup) -> Path:
        if isinstance(backup, StateBackup):
            return backup.path
        p = Path(backup)
        if not p.is_absolute() and len(p.parts) == 1 and (self.backup_dir / p).exists():
            return self.backup_dir / p
        return p

    def _backup_content(self, source: Path) -> tuple[bytes, Any]:
        """(bytes, data) of a backup, or :class:`StateReadError`."""
        try:
            raw = source.read_bytes()
        except OSError as exc:
            raise StateReadError(
                f"cannot read backup {source}: {exc.strerror or exc}; "
                "list the backups with `pipekit state backups`",
                path=self.path,
            ) from None
        try:
            return raw, orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise StateReadError(
                f"backup {source} is not valid JSON ({exc}); choose another "
                "(`pipekit state backups` lists them and says which parse)",
                path=self.path,
            ) from None

    # -- the log -------------------------------------------------------------

    def history(self, limit: int | None = None) -> list[StateLogEntry]:
        """The logged transactions, newest first (at most ``limit``)."""
        return read_log(self.log_path, limit)

    def _entry(
        self, operation: str, success: bool, raw: bytes | None = None, **fields: Any
    ) -> StateLogEntry:
        """The log entry for ``operation``, which wrote ``raw`` (if any): by
        this process, now, unless ``fields`` say otherwise."""
        return StateLogEntry(
            **{"time": time.time(), "pid": os.getpid(), "host": HOST, **fields},
            operation=operation,
            success=success,
            bytes=None if raw is None else len(raw),
            checksum=None if raw is None else _checksum(raw),
        )

    def _append(self, entry: StateLogEntry, *, sync: bool = True) -> bool:
        """Append to the log; False when it failed (a warning: the state
        itself is fine)."""
        try:
            append_entry(self.log_path, entry, sync=sync)
        except OSError as exc:
            log.warning("could not append to the transaction log %s: %s", self.log_path, exc)
            return False
        return True

    def _log_failure(
        self, operation: str, exc: BaseException, *, restored_from: str | None = None
    ) -> None:
        text = str(exc)
        error = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
        self._append(self._entry(operation, False, error=error, restored_from=restored_from))


def _checksum(raw: bytes) -> str:
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def _where(path: str) -> str:
    """``$.a.b[0]`` -> ``field 'a.b[0]'``; ``$`` -> ``the top level``."""
    if path in ("$", ""):
        return "the top level"
    return f"field {path[2:] if path.startswith('$.') else path.lstrip('$')!r}"


def _exception_path(exc: BaseException) -> str:
    """The field path a validator's exception names: ``absolute_path``
    (jsonschema) or ``path`` (a sequence of keys/indexes, or a string)."""
    raw: Any = getattr(exc, "absolute_path", None)
    if raw is None:
        raw = getattr(exc, "path", None)
    if isinstance(raw, str):
        return raw if raw.startswith("$") else "$." + raw
    try:
        parts = list(raw)  # None too raises TypeError
    except TypeError:
        return "$"
    return "$" + "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in parts)


def _stamp_us(name: str) -> int:
    """Microseconds since the epoch, from a backup's name."""
    m = _STAMP_RE.search(name)
    if m is None:
        return 0
    d = m.group(1)
    fields = (int(d[0:4]), int(d[4:6]), int(d[6:8]), int(d[9:11]), int(d[11:13]), int(d[13:15]))
    return calendar.timegm((*fields, 0, 0, 0)) * 1_000_000 + int(m.group(2))
