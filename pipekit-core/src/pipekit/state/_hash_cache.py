"""Content hashes cached by (size, mtime_ns, inode), like git's index.

An unchanged file is never read again: a ``stat`` answers. A file whose
mtime is within :data:`RACY_NS` of the moment it was hashed is not cached
(it could change again within the file system's timestamp granularity without
its stat changing), except for outputs the runner itself just committed.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from .. import _json
from .._atomic import atomic_write_bytes
from .._private_files import make_private_dir
from ._shapes import DamagedRecord, move_aside, warn_damaged


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """The cyclic GC off while many long-lived objects are made (the
    objects made are then frozen: they live as long as the run)."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()


log = logging.getLogger("pipekit.state")

__all__ = ["HashCache", "hash_file", "paused_gc", "RACY_NS"]

RACY_NS = 2_000_000_000


def hash_file(path: Path | str) -> str:
    """SHA-256 of a file's content, hex."""
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


_AFRESH = "the hash cache starts afresh"


def _valid_entries(path: Path, raw: bytes) -> dict[str, list[object]]:
    """The entries of a cache file; those of a damaged one are dropped (a
    torn or foreign cache is only a cache), with a warning."""
    try:
        data = _json.loads(raw)
    except ValueError:
        warn_damaged(path, "not JSON", _AFRESH)
        return {}
    if not isinstance(data, dict):
        warn_damaged(path, "not a JSON object", _AFRESH)
        return {}
    if data.get("v") != 1:
        return {}  # another version's cache: not damage
    entries = data.get("entries")
    if not isinstance(entries, dict):
        warn_damaged(path, "'entries' is not an object", _AFRESH)
        return {}
    return entries  # each entry is checked where it is used


class HashCache:
    """A persistent map ``key -> (size, mtime_ns, ino, sha256)``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._dirty = False
        self.reads = 0
        self._entries: dict[str, list[object]] = {}
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return
        except OSError as exc:  # a folder, unreadable: only a cache
            warn_damaged(path, exc.strerror or str(exc), _AFRESH)
            return
        with paused_gc():  # (100,000 entries: collections would walk them again and again)
            self._entries = _valid_entries(path, raw)

    MISS = "miss"

    def _cached(self, key: str, path: Path | str) -> tuple[os.stat_result | None, str | None]:
        """(stat, cached hash): the stat is None when the file does not
        exist; the hash is None when the cache cannot answer."""
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None, None
        return st, self.lookup(key, st)

    def lookup(self, key: str, st: os.stat_result) -> str | None:
        """The cached hash of ``key`` if ``st`` (its file's stat) is the one
        cached with it; else None."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        try:
            if entry[0] == st.st_size and entry[1] == st.st_mtime_ns and entry[2] == st.st_ino:
                digest = entry[3]
                if isinstance(digest, str):
                    return digest
                raise DamagedRecord("its hash is not a string")
        except (TypeError, LookupError, DamagedRecord) as exc:  # damaged: a miss
            warn_damaged(self.path, f"the entry of {key!r}: {exc}", "such entries are dropped")
        return None

    def peek(self, key: str, path: Path | str, read_up_to: int = 0) -> str | None:
        """Like :meth:`digest` but reads only a file of at most
        ``read_up_to`` bytes: returns :attr:`MISS` when answering would
        take a longer read."""
        if not read_up_to and key not in self._entries:  # never hashed: a read
            return self.MISS
        st, cached = self._cached(key, path)
        if st is None or cached is not None:
            return cached
        if st.st_size <= read_up_to:  # (a file changed within the racy window, say)
            return self.read(key, path, st)
        return self.MISS

    def digest(self, key: str, path: Path | str) -> str | None:
        """The content hash of ``path``, or None when it does not exist."""
        st, cached = self._cached(key, path)
        if st is None or cached is not None:
            return cached
        return self.read(key, path, st)

    def read(self, key: str, path: Path | str, st: os.stat_result) -> str:
        """Hash ``path`` (whose stat is ``st``), cache it under ``key`` unless
        it changed within the racy window."""
        digest = hash_file(path)
        self.reads += 1
        if time.time_ns() - st.st_mtime_ns >= RACY_NS:
            self._store(key, st, digest)
        else:
            with self._lock:
                self._dirty |= self._entries.pop(key, None) is not None
        return digest

    def remember(self, key: str, path: Path | str, digest: str) -> None:
        """Cache the hash of a file this process wrote and committed itself."""
        self._store(key, os.stat(path), digest)

    def _store(self, key: str, st: os.stat_result, digest: str) -> None:
        with self._lock:
            self._entries[key] = [st.st_size, st.st_mtime_ns, st.st_ino, digest]
            self._dirty = True

    def save(self) -> None:
        """Write the cache if it changed (not fsynced: a lost cache costs
        only a re-read)."""
        with self._lock:
            if not self._dirty:
                return
            data = _json.dumps({"v": 1, "entries": self._entries})
            self._dirty = False
        try:
            if self.path.is_dir():
                move_aside(self.path)  # damaged (warned at load): kept for a look
            make_private_dir(self.path.parent)
            atomic_write_bytes(self.path, data, durable=False, mode=0o600)
        except OSError as exc:  # a read-only or full disk: the next run re-reads
            log.warning("could not save the hash cache %s: %s", self.path, exc.strerror or exc)
