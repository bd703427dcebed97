"""The ``file`` backend's dead-letter store: one SQLite database in WAL mode,
``<state_dir>/deadletters.sqlite``.

Each commit is synced (``synchronous=FULL``), so a dead letter is durable
before the runner saves a checkpoint past its record. The database is opened
on first use; reading from a state dir without one creates nothing.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .._private_files import make_private_dir
from ..state._shapes import move_aside, warn_damaged
from ._protocols import DEAD_LETTER_FIELDS as _COLUMNS
from ._protocols import DeadLetter

__all__ = ["FileDeadLetterStore", "DB_NAME"]

DB_NAME = "deadletters.sqlite"
_READ_AS_EMPTY = "read as holding no dead letters; the next dead letter moves it aside"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    pipeline TEXT NOT NULL,
    stage TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    run_id TEXT NOT NULL,
    input TEXT NOT NULL,
    input_index INTEGER NOT NULL,
    offset INTEGER NOT NULL,
    line INTEGER NOT NULL,
    format TEXT NOT NULL,
    record BLOB NOT NULL,
    error_type TEXT NOT NULL,
    message TEXT NOT NULL,
    traceback TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    first_failed REAL NOT NULL,
    last_failed REAL NOT NULL,
    UNIQUE (pipeline, stage, fingerprint, input_index, offset)
);
CREATE INDEX IF NOT EXISTS dead_letters_by_stage ON dead_letters (pipeline, stage);
"""

_IDENTITY = ("pipeline", "stage", "fingerprint", "input_index", "offset")
"""What identifies a dead letter (the upsert's key)."""
_UPSERT = f"""
INSERT INTO dead_letters ({", ".join(_COLUMNS)})
VALUES ({", ".join("?" for _ in _COLUMNS)})
ON CONFLICT ({", ".join(_IDENTITY)}) DO UPDATE SET
    first_failed = MIN(first_failed, excluded.first_failed),
    {", ".join(f"{c} = excluded.{c}" for c in _COLUMNS if c not in (*_IDENTITY, "first_failed"))}
"""
_SELECT = f"SELECT id, {', '.join(_COLUMNS)} FROM dead_letters"
_ID_OF = f"SELECT id FROM dead_letters WHERE {' AND '.join(f'{c} = ?' for c in _IDENTITY)}"


class FileDeadLetterStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: Any = None
        self._lock = threading.Lock()

    # -- connection -------------------------------------------------------------

    def _connect(self, create: bool) -> Any:
        """The connection, or None when the database does not exist and
        ``create`` is false (a read needs no new file)."""
        if self._conn is not None:
            return self._conn
        if not create and not self.path.exists():
            return None
        import sqlite3

        damage = "not a file" if self.path.exists() and not self.path.is_file() else None
        if damage is None:
            try:
                self._conn = self._open()
                return self._conn
            except sqlite3.DatabaseError as exc:
                named = getattr(exc, "sqlite_errorname", "")
                if named != "SQLITE_NOTADB" and "not a database" not in str(exc):
                    raise  # damaged is only a file SQLite cannot read as a database
                damage = str(exc)
        if not create:
            warn_damaged(self.path, damage, _READ_AS_EMPTY)
            return None
        self._set_aside(damage)
        self._conn = self._open()
        return self._conn

    def _open(self) -> Any:
        """Connect, making the database (0600 in a 0700 folder, whatever
        the umask: SQLite gives its -wal and -shm files the same mode)."""
        import sqlite3

        make_private_dir(self.path.parent)
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
        conn = sqlite3.connect(
            str(self.path), timeout=30.0, isolation_level=None, check_same_thread=False
        )
        try:
            _switch_to_wal(conn)
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA busy_timeout=30000")
            conn.executescript(_SCHEMA)
        except BaseException:
            conn.close()
            raise
        return conn

    def _set_aside(self, why: str) -> None:
        """Move a damaged database (and its -wal and -shm) out of the way,
        kept for a look; a new one is made."""
        aside = move_aside(self.path)
        for suffix in ("-wal", "-shm"):
            companion = Path(f"{self.path}{suffix}")
            if companion.exists():
                os.rename(companion, f"{aside}{suffix}")
        warn_damaged(self.path, why, f"moved aside to {aside}; a new database is made")

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    @staticmethod
    def _where(
        pipeline: str,
        stage: str | None,
        fingerprint: str | None,
        from_position: tuple[int, int] | None = None,
    ) -> tuple[str, list[Any]]:
        clauses = ["pipeline = ?"]
        args: list[Any] = [pipeline]
        for column, value in (("stage", stage), ("fingerprint", fingerprint)):
            if value is not None:
                clauses.append(f"{column} = ?")
                args.append(value)
        if from_position is not None:
            index, offset = from_position
            clauses.append("(input_index > ? OR (input_index = ? AND offset >= ?))")
            args += [index, index, offset]
        return " AND ".join(clauses), args

    def _rows(self, sql: str, args: Any) -> list[Any]:
        """The rows a query reads; none where there is no database yet."""
        with self._lock:
            conn = self._connect(False)
            return [] if conn is None else conn.execute(sql, args).fetchall()

    @staticmethod
    def _letter(row: Any) -> DeadLetter:
        values = dict(zip(("id", *_COLUMNS), row))
        values["record"] = bytes(values["record"])
        return DeadLetter(**values)

    # -- the protocol -------------------------------------------------------------

    def add(self, letter: DeadLetter) -> int:
        with self._lock:
            conn = self._connect(True)
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute(_UPSERT, [getattr(letter, c) for c in _COLUMNS])
                row = conn.execute(_ID_OF, [getattr(letter, c) for c in _IDENTITY]).fetchone()
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return int(row[0])

    def list(
        self,
        pipeline: str,
        *,
        stage: str | None = None,
        fingerprint: str | None = None,
        limit: int | None = None,
    ) -> list[DeadLetter]:
        where, args = self._where(pipeline, stage, fingerprint)
        sql = f"{_SELECT} WHERE {where} ORDER BY stage, input_index, offset"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        return [self._letter(row) for row in self._rows(sql, args)]

    def get(self, pipeline: str, id: int) -> DeadLetter | None:
        rows = self._rows(f"{_SELECT} WHERE pipeline = ? AND id = ?", (pipeline, id))
        return self._letter(rows[0]) if rows else None

    def delete(self, pipeline: str, ids: Iterable[int]) -> int:
        ids = list(ids)
        if not ids:
            return 0
        with self._lock:
            conn = self._connect(False)
            if conn is None:
                return 0
            conn.execute("BEGIN IMMEDIATE")
            try:
                sql = "DELETE FROM dead_letters WHERE pipeline = ? AND id = ?"
                n = conn.executemany(sql, [(pipeline, i) for i in ids]).rowcount
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return int(n)

    def purge(
        self,
        pipeline: str,
        *,
        stage: str | None = None,
        fingerprint: str | None = None,
        from_position: tuple[int, int] | None = None,
    ) -> int:
        where, args = self._where(pipeline, stage, fingerprint, from_position)
        with self._lock:
            conn = self._connect(False)
            if conn is None:
                return 0
            return int(conn.execute(f"DELETE FROM dead_letters WHERE {where}", args).rowcount)

    def count(
        self, pipeline: str, *, stage: str | None = None, fingerprint: str | None = None
    ) -> int:
        where, args = self._where(pipeline, stage, fingerprint)
        rows = self._rows(f"SELECT COUNT(*) FROM dead_letters WHERE {where}", args)
        return int(rows[0][0]) if rows else 0


def _switch_to_wal(conn: Any) -> None:
    """``PRAGMA journal_mode=WAL``, tried again while another connection
    holds the lock it needs: SQLite answers "database is locked" at once
    there, without waiting out the busy timeout, when several processes or
    threads open a new database together (an ``add`` then failed, and its
    dead letter was lost). tenacity: the retry library core uses already."""
    import sqlite3

    import tenacity

    def locked(exc: BaseException) -> bool:
        return isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc)

    for attempt in tenacity.Retrying(
        retry=tenacity.retry_if_exception(locked),
        wait=tenacity.wait_exponential(multiplier=0.002, max=0.1) + tenacity.wait_random(0, 0.005),
        stop=tenacity.stop_after_delay(30),
        reraise=True,
    ):
        with attempt:
            conn.execute("PRAGMA journal_mode=WAL")
