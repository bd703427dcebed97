"""The checkpoint byte store over Redis.

A blob is stored in chunks of at most ``chunk_size`` bytes under keys that
carry a fresh random version, ``<prefix>cpc:<version>:<i>``; one hash per
namespace, ``<prefix>cpi:<namespace>``, maps each id to ``"<version>
<chunks> <size>"``. ``put`` writes the chunks (with an expiry, so a writer
that dies leaves nothing behind for long) and then publishes them with one
script that checks the fencing token, checks the chunks are all there,
removes their expiry, points the index at them and deletes the previous
version's chunks: a reader (one script too) sees the old blob or the new one,
never a mix. Chunks and the publish go out in one round trip.

``namespace_lock(namespace)`` serializes the writers of a namespace across
runners and hosts (:class:`pipekit.CheckpointManager` holds it around every
change): a Redis lease, renewed while held, that a holder killed on this
host leaves at once and one killed elsewhere when its TTL runs out.
"""

from __future__ import annotations

import builtins
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pipekit.errors import FencedOut

from .connection import RedisCommandError, RedisConnection

__all__ = ["RedisCheckpointStore"]

ORPHAN_TTL_MS = 24 * 3600 * 1000
"""Chunks not yet published expire after a day."""


class RedisCheckpointStore:
    fencing = True

    def __init__(self, conn: RedisConnection) -> None:
        self.conn = conn
        self.chunk_size = conn.options.chunk_size
        self._chunks = conn.key("cpc", "")
        self._locks: Any = None

    @contextmanager
    def namespace_lock(self, namespace: str, *, shared: bool = False) -> Iterator[None]:
        """Hold the lease of the namespace's writers (a reader, ``shared``,
        takes none: each ``get`` is one script, and sees a blob or none)."""
        if shared:
            yield
            return
        if self._locks is None:
            from .lock import RedisLockBackend

            self._locks = RedisLockBackend(self.conn, self.conn.options.lock_ttl)
        with self._locks.lock(f"checkpoint-namespace:{namespace}"):
            yield

    def _index(self, namespace: str) -> str:
        return self.conn.key("cpi", namespace)

    def put(
        self, namespace: str, id: str, data: bytes, *, fence: tuple[str, int] | None = None
    ) -> None:
        data = bytes(data)
        version = uuid.uuid4().hex
        size = self.chunk_size
        parts = [data[i : i + size] for i in range(0, len(data), size)] or [b""]
        entry = f"{version} {len(parts)} {len(data)}"
        index = self._index(namespace)
        fkey = self.conn.key("fence", fence[0]) if fence is not None else index
        token = str(int(fence[1])) if fence is not None else ""
        prefix = self._chunks
        sha = self.conn.sha("publish")

        def build(pipe: Any) -> None:
            for i, part in enumerate(parts):
                pipe.set(f"{prefix}{version}:{i}", part, px=ORPHAN_TTL_MS)
            pipe.evalsha(sha, 2, index, fkey, id, entry, prefix, token)

        doing = f"saving the checkpoint {namespace}/{id}"
        result = int(self.conn.pipeline(build, doing)[-1])
        if result == 1:
            return
        self._drop_chunks(version, len(parts))
        if result == -1:
            assert fence is not None
            raise FencedOut(
                f"refused the checkpoint {namespace}/{id}: the lock {fence[0]!r} was taken by "
                f"another runner since (stale fencing token {fence[1]})"
            )
        raise RedisCommandError(
            f"{self.conn.where()} lost chunks of the checkpoint {namespace}/{id} before it was "
            "published (evicted? see `pipekit doctor`)"
        )

    def _drop_chunks(self, version: str, n: int) -> None:
        keys = [f"{self._chunks}{version}:{i}" for i in range(n)]
        try:
            self.conn.call(lambda c: c.delete(*keys), "removing unpublished chunks")
        except Exception:
            pass  # they expire by themselves

    def get(self, namespace: str, id: str) -> bytes | None:
        out = self.conn.script(
            "fetch",
            [self._index(namespace)],
            [id, self._chunks],
            f"loading the checkpoint {namespace}/{id}",
        )
        if not out:
            return None
        entry = out[0].decode() if isinstance(out[0], bytes) else str(out[0])
        try:
            _version, n, size = entry.split(" ")
            n_chunks, n_bytes = int(n), int(size)
        except ValueError:
            return None
        chunks = out[1:]
        if len(chunks) != n_chunks:
            return None  # damaged: a chunk is missing
        data = b"".join(chunks)
        if len(data) != n_bytes:
            return None
        return data

    def list(self, namespace: str) -> list[str]:
        ids = self.conn.call(
            lambda c: c.hkeys(self._index(namespace)), f"listing checkpoints of {namespace}"
        )
        return sorted(i.decode() if isinstance(i, bytes) else str(i) for i in ids)

    def delete(self, namespace: str, id: str) -> None:
        self.conn.script(
            "drop",
            [self._index(namespace)],
            [id, self._chunks],
            f"deleting the checkpoint {namespace}/{id}",
        )

    def connect(self) -> None:
        self.conn.connect()

    def doctor(self) -> builtins.list[Any]:
        from .doctor import checks

        return checks(self.conn, "checkpoints")
