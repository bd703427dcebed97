"""A backend, ``slowfile``, that makes checkpoint writes and the record
loop's output syncs slow, so that kills land inside them. It is core's
``file`` backend with a delay ($PIPEKIT_TEST_SLOW_S, default 2 ms) in every
checkpoint put and, with $PIPEKIT_TEST_SLOW_SYNC=1, in every sync of a
partial output, with $PIPEKIT_TEST_SLOW_LIST=1 in every listing (so in
every commit) and with $PIPEKIT_TEST_SLOW_PUT=1 in every idempotency
``put_many`` (a commit's record writes); each logs "begin X"/"end X" lines to $PIPEKIT_TEST_SLOW_LOG,
so a test can tell where a kill landed. It registers no dead-letter store
(dead letters then go to the file store)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pipekit


def _slow(what: str) -> None:
    log = os.environ.get("PIPEKIT_TEST_SLOW_LOG")
    delay = float(os.environ.get("PIPEKIT_TEST_SLOW_S", "0.002"))
    if log:
        with open(log, "a") as f:
            f.write(f"begin {what}\n")
    time.sleep(delay)


def _slow_end(what: str) -> None:
    log = os.environ.get("PIPEKIT_TEST_SLOW_LOG")
    if log:
        with open(log, "a") as f:
            f.write(f"end {what}\n")


class SlowCheckpointStore:
    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def put(self, namespace: str, id: str, data: bytes, *, fence: Any = None) -> None:
        _slow("put")
        self.inner.put(namespace, id, data, fence=fence)
        _slow_end("put")

    def get(self, namespace: str, id: str) -> bytes | None:
        return self.inner.get(namespace, id)

    def list(self, namespace: str) -> list[str]:
        if not os.environ.get("PIPEKIT_TEST_SLOW_LIST"):
            return self.inner.list(namespace)
        _slow("list")
        try:
            return self.inner.list(namespace)
        finally:
            _slow_end("list")

    def delete(self, namespace: str, id: str) -> None:
        self.inner.delete(namespace, id)


def _slow_checkpoints(options: dict[str, Any], *, state_dir: Path) -> Any:
    from pipekit.stores import _file_factories as file_factories

    return SlowCheckpointStore(file_factories.checkpoint_store(options, state_dir=state_dir))


def _patch_sync() -> None:
    from pipekit.engine import _records as records

    real = records._sync_output
    if getattr(real, "slow", False):
        return

    def slow_sync(fd: int) -> None:
        _slow("sync")
        real(fd)
        _slow_end("sync")

    slow_sync.slow = True  # type: ignore[attr-defined]
    records._sync_output = slow_sync


@pipekit.hookimpl
def register_lock_backends(register: Callable[[str, Any], None]) -> None:
    from pipekit.stores import _file_factories as file_factories

    register("slowfile", file_factories.lock_backend)


class SlowIdempotencyStore:
    """The file store, with the delay in every ``put_many`` (a commit's
    record writes) when $PIPEKIT_TEST_SLOW_PUT=1."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def put_many(self, records: Any, *, durable: bool = True) -> None:
        if os.environ.get("PIPEKIT_TEST_SLOW_PUT") != "1":
            return self.inner.put_many(records, durable=durable)
        _slow("put_many")
        try:
            return self.inner.put_many(records, durable=durable)
        finally:
            _slow_end("put_many")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _slow_idempotency(options: dict[str, Any], *, state_dir: Path) -> Any:
    from pipekit.stores import _file_factories as file_factories

    return SlowIdempotencyStore(file_factories.idempotency_store(options, state_dir=state_dir))


@pipekit.hookimpl
def register_idempotency_stores(register: Callable[[str, Any], None]) -> None:
    register("slowfile", _slow_idempotency)


@pipekit.hookimpl
def register_checkpoint_stores(register: Callable[[str, Any], None]) -> None:
    register("slowfile", _slow_checkpoints)
    if os.environ.get("PIPEKIT_TEST_SLOW_SYNC") == "1":
        _patch_sync()
