"""Group commit: stages that finished their work are committed together by
one thread, so that the fsyncs of one stage overlap the work of the next.

For each batch: every output temp file is hashed and fsynced, renamed into
place, each touched folder fsynced once, then the idempotency records are
written, then the leases released and the waiting futures resolved. A stage
is done, and its dependents may start, only when its future resolves.
"""

from __future__ import annotations

import os
import queue
import stat
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import attrs

from .._atomic import (
    move_into_place,
    move_tree_into_place,
    remove_aside,
    sync_dirs,
    sync_files,
    unlink_quietly,
)
from ..errors import FencedOut, LeaseLost, StageFailed
from ..state._folders import Entry, FolderProblem, entries_digest, walk_folder
from ..state._hash_cache import hash_file

TreeFiles = list[tuple[str, str, str]]
"""The files of a folder output: (key, path relative to the folder, hash)."""

__all__ = ["CommitJob", "GroupCommitter"]


def _or_empty(known: dict[str, str] | None) -> dict[str, str]:
    return known or {}


@attrs.define(eq=False)
class CommitJob:
    """One stage's outputs to put in place (temp -> final) and its record."""

    keys: list[str]
    tmps: list[Path]
    finals: list[Path]
    lease: Any
    make_record: Callable[[dict[str, str]], Any]
    done: Callable[[dict[str, str] | None, BaseException | None], Any]
    known: dict[str, str] = attrs.field(default=None, converter=_or_empty)
    """Output key -> content hash already computed while writing it."""
    future: Future[Any] = attrs.field(init=False, factory=Future)


class GroupCommitter:
    LINGER_S = 0.004
    MAX_BATCH = 256

    def __init__(
        self,
        store: Any,
        remember: Callable[[str, Path, str], None],
        busy: Callable[[], bool] = lambda: False,
    ) -> None:
        self._busy = busy
        self._store = store
        self._remember = remember
        self._queue: queue.SimpleQueue[CommitJob | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="pipekit-commit", daemon=True)
        self._thread.start()

    def submit(self, job: CommitJob) -> Future[Any]:
        self._queue.put(job)
        return job.future

    def close(self) -> None:
        """Commit what is queued, then stop."""
        self._queue.put(None)
        self._thread.join()

    def _loop(self) -> None:
        stop = False
        while not stop:
            item = self._queue.get()
            if item is None:
                break
            batch: list[CommitJob] = [item]
            # While other stages are still working, linger a moment so that
            # their commits share this batch's syncs (asleep: one wake-up per
            # batch, not one per stage); when nothing else runs this commit
            # is on the critical path and goes at once.
            if self._busy():
                time.sleep(self.LINGER_S)
            while len(batch) < self.MAX_BATCH:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            self.commit(batch)

    def commit(self, batch: list[CommitJob]) -> None:
        """Commit ``batch`` (in the committer's thread): outputs hashed and
        made durable, moved into place, their folders made durable, then
        the records written; each job's future resolves, its lease freed."""
        errors: dict[int, BaseException] = {}
        trees: dict[tuple[int, str], TreeFiles] = {}
        digests = self._hash_and_sync(batch, errors, trees)
        self._move_into_place(batch, errors)
        self._write_records(batch, digests, errors, trees)
        for i, job in enumerate(batch):
            self._settle(job, None if i in errors else digests.get(i), errors.get(i))

    @staticmethod
    def _hash_and_sync(
        batch: list[CommitJob],
        errors: dict[int, BaseException],
        trees: dict[tuple[int, str], TreeFiles],
    ) -> dict[int, dict[str, str]]:
        digests: dict[int, dict[str, str]] = {}
        to_sync: dict[int, list[Path | str]] = {}
        for i, job in enumerate(batch):
            sync = to_sync[i] = []
            try:
                digests[i] = {}
                for key, tmp in zip(job.keys, job.tmps):
                    if key.endswith("/"):
                        digests[i][key], trees[i, key] = _hash_tree(tmp, key, sync)
                    else:
                        digests[i][key] = job.known.get(key) or hash_file(tmp)
                        sync.append(tmp)
            except BaseException as exc:
                errors[i] = exc
        try:
            sync_files([t for i in range(len(batch)) if i not in errors for t in to_sync[i]])
        except BaseException as exc:
            for i in range(len(batch)):
                errors.setdefault(i, exc)
        return digests

    @staticmethod
    def _move_into_place(batch: list[CommitJob], errors: dict[int, BaseException]) -> None:
        folders: set[Path] = set()
        asides: list[Path] = []
        for i, job in enumerate(batch):
            if i in errors:
                continue
            if getattr(job.lease, "lost", False):
                # Another runner may hold the stage now: do not put this
                # holder's outputs over its work.
                errors[i] = LeaseLost.of(job.lease)
                continue
            try:
                for key, tmp, final in zip(job.keys, job.tmps, job.finals):
                    folders.add(final.parent)
                    if key.endswith("/"):
                        if not stat.S_ISDIR(os.lstat(tmp).st_mode):
                            raise StageFailed(f"{tmp} is no longer a folder")
                        aside = move_tree_into_place(tmp, final)
                        if aside is not None:
                            asides.append(aside)
                        continue
                    if not stat.S_ISREG(os.lstat(tmp).st_mode):  # swapped since it was checked
                        raise StageFailed(f"{tmp} is no longer a regular file")
                    move_into_place(tmp, final)
            except BaseException as exc:
                errors[i] = exc
        try:
            sync_dirs(folders)
        except BaseException as exc:
            for i in range(len(batch)):
                errors.setdefault(i, exc)
        for aside in asides:  # the old trees, once the new ones are durably in place
            remove_aside(aside)

    def _write_records(
        self,
        batch: list[CommitJob],
        digests: dict[int, dict[str, str]],
        errors: dict[int, BaseException],
        trees: dict[tuple[int, str], TreeFiles],
    ) -> None:
        owners = [i for i in range(len(batch)) if i not in errors]
        records = []
        for i in owners:
            job = batch[i]
            for key, final in zip(job.keys, job.finals):
                if key.endswith("/"):
                    for file_key, relative, digest in trees.get((i, key), ()):
                        self._remember(file_key, final / relative, digest)
                    continue
                self._remember(key, final, digests[i][key])
            records.append(job.make_record(digests[i]))
        if not records:
            return
        try:
            # Not fsynced: the outputs are durable and in place before the
            # records are written, so a record that survives a power loss
            # implies its outputs did; a lost record only makes its stage
            # run again (and every skip re-checks the outputs' hashes).
            self._store.put_many(records, durable=False)
        except FencedOut as exc:
            # A store that refuses stale fencing tokens names the refused
            # records; the rest of the batch was stored.
            refused = set(exc.keys)
            for i, record in zip(owners, records):
                if not refused or record.key in refused:
                    errors.setdefault(i, exc)
        except BaseException as exc:
            for i in range(len(batch)):
                errors.setdefault(i, exc)

    @staticmethod
    def _settle(
        job: CommitJob, digests: dict[str, str] | None, error: BaseException | None
    ) -> None:
        """A committed job's end: its temp files gone if it failed, its
        lease released, its future resolved (never left hanging)."""
        if error is not None:
            for tmp in job.tmps:
                unlink_quietly(tmp)
        try:
            job.lease.release()
        except Exception:
            pass
        try:
            job.future.set_result(job.done(digests, error))
        except BaseException as exc:
            job.future.set_exception(exc)


def _hash_tree(tmp: Path, key: str, sync: list[Path | str]) -> tuple[str, TreeFiles]:
    """The digest of folder output ``tmp`` (key ``key``) and its files;
    every file and folder in it added to ``sync``. A link pointing outside
    the folder is refused."""
    root = os.fspath(tmp)
    entries: list[Entry] = []
    files: TreeFiles = []
    for child_key, path, st in walk_folder(root, key, os.path.realpath(root)):
        sync.append(path)
        if st is None:
            entries.append((child_key, "", False))
            continue
        try:
            digest = hash_file(path)
        except OSError as exc:
            raise FolderProblem(f"cannot read {child_key!r}: {exc.strerror or exc}") from None
        entries.append((child_key, digest, bool(st.st_mode & stat.S_IXUSR)))
        files.append((child_key, path[len(root) + 1 :], digest))
    sync.append(tmp)
    entries.sort()
    return entries_digest(entries), files
