"""Conformance tests of the ``CheckpointStore`` byte protocol, for every backend.

What a store must do (``pipekit.stores.CheckpointStore``): ``put``
is atomic (a reader sees the old bytes or the new ones, never a mix) and
durable when it returns; ``get`` returns the bytes or None; ``list`` the ids of
a namespace, sorted, never an in-flight temporary; ``delete`` removes one id
and ignores a missing one; ``fence`` is accepted.

How a backend reuses this module:

- Add a factory to :data:`STORE_FACTORIES`: ``name -> (tmp_path) -> opener``,
  where ``opener()`` returns a new store instance over the same data each
  time it is called (so tests can check that data outlives an instance).
  The ``checkpoint_store_factory`` / ``checkpoint_store`` fixtures below are
  parametrized over every factory, so the conformance class *and* the
  CheckpointManager tests (``test_checkpoint_*.py``, which load this module
  with ``pytest_plugins = ["checkpoint_conformance"]``) run over the new
  store. A factory that needs something absent (fakeredis, a redis-server
  binary) calls ``pytest.skip``.
- Or subclass :class:`CheckpointStoreConformance` in the backend's own test
  module (in this folder, or with this folder on ``sys.path``) and override
  the ``checkpoint_store_factory`` fixture.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pipekit.stores._file_checkpoint import FileCheckpointStore


def _file_store(tmp_path: Path) -> Callable[[], Any]:
    root = tmp_path / "checkpoints"
    return lambda: FileCheckpointStore(root)


STORE_FACTORIES: dict[str, Callable[[Path], Callable[[], Any]]] = {"file": _file_store}


@pytest.fixture(params=sorted(STORE_FACTORIES))
def checkpoint_store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Any]:
    """A callable that opens a store instance over one fresh location."""
    return STORE_FACTORIES[request.param](tmp_path)


@pytest.fixture
def checkpoint_store(checkpoint_store_factory: Callable[[], Any]) -> Any:
    return checkpoint_store_factory()


class CheckpointStoreConformance:
    """The byte-store contract. Uses the ``checkpoint_store_factory`` fixture."""

    NS = "pipe.stage"

    def test_get_of_a_missing_id_or_namespace_is_none(self, checkpoint_store: Any) -> None:
        assert checkpoint_store.get(self.NS, "nothing") is None
        assert checkpoint_store.get("no-such-namespace", "nothing") is None

    def test_put_then_get_returns_the_exact_bytes(self, checkpoint_store: Any) -> None:
        cases = {
            "empty": b"",
            "binary": bytes(range(256)) * 3,
            "text": "zażółć\n".encode(),
            "large": os.urandom(1 << 16) * 40,  # 2.5 MiB
        }
        for id, data in cases.items():
            checkpoint_store.put(self.NS, id, data)
        for id, data in cases.items():
            assert checkpoint_store.get(self.NS, id) == data, id

    def test_put_replaces(self, checkpoint_store: Any) -> None:
        checkpoint_store.put(self.NS, "x", b"old")
        checkpoint_store.put(self.NS, "x", b"new")
        assert checkpoint_store.get(self.NS, "x") == b"new"
        assert checkpoint_store.list(self.NS) == ["x"]

    def test_data_outlives_the_store_instance(
        self, checkpoint_store_factory: Callable[[], Any]
    ) -> None:
        checkpoint_store_factory().put(self.NS, "x", b"kept")
        assert checkpoint_store_factory().get(self.NS, "x") == b"kept"

    def test_list_is_sorted_and_per_namespace(self, checkpoint_store: Any) -> None:
        for id in ("b-0000000002", "_index", "b-0000000001", "a.b:c-d_e"):
            checkpoint_store.put(self.NS, id, id.encode())
        checkpoint_store.put("other.ns", "zzz", b"z")
        assert checkpoint_store.list(self.NS) == sorted(
            ["b-0000000002", "_index", "b-0000000001", "a.b:c-d_e"]
        )
        assert checkpoint_store.list("other.ns") == ["zzz"]
        assert checkpoint_store.list("empty.ns") == []
        assert checkpoint_store.get("other.ns", "_index") is None

    def test_delete_removes_one_id_and_ignores_a_missing_one(self, checkpoint_store: Any) -> None:
        checkpoint_store.put(self.NS, "a", b"1")
        checkpoint_store.put(self.NS, "b", b"2")
        checkpoint_store.delete(self.NS, "a")
        checkpoint_store.delete(self.NS, "a")
        checkpoint_store.delete("never.used", "a")
        assert checkpoint_store.get(self.NS, "a") is None
        assert checkpoint_store.list(self.NS) == ["b"]

    def test_fence_is_accepted(self, checkpoint_store: Any) -> None:
        checkpoint_store.put(self.NS, "f", b"1", fence=("stage/pipe/stage", 1))
        checkpoint_store.put(self.NS, "f", b"2", fence=("stage/pipe/stage", 2))
        assert checkpoint_store.get(self.NS, "f") == b"2"

    def test_readers_see_old_or_new_bytes_never_a_mix(self, checkpoint_store: Any) -> None:
        a, b = b"a" * (1 << 20), b"b" * (1 << 19)
        checkpoint_store.put(self.NS, "x", a)
        stop = threading.Event()
        errors: list[BaseException] = []

        def writer() -> None:
            try:
                for i in range(30):
                    checkpoint_store.put(self.NS, "x", b if i % 2 == 0 else a)
            except BaseException as exc:  # reported below
                errors.append(exc)
            finally:
                stop.set()

        t = threading.Thread(target=writer)
        t.start()
        seen = set()
        while not stop.is_set():
            got = checkpoint_store.get(self.NS, "x")
            assert got in (a, b), None if got is None else (len(got), got[:1], got[-1:])
            seen.add(got[:1])
            assert checkpoint_store.list(self.NS) == ["x"]
        t.join()
        assert not errors, errors
        assert checkpoint_store.get(self.NS, "x") == a
