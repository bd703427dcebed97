"""The backends of one pipeline: its lock backend, idempotency store,
checkpoint store and dead-letter store, built from the registered factories."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from . import _file_factories as file_factories

__all__ = ["Backends", "make_backends", "build_backends"]


@attrs.define
class Backends:
    name: str
    locks: Any
    idempotency: Any
    checkpoints: Any
    dead_letter_factory: Callable[[], Any] | None = None
    _dead_letters: Any = attrs.field(default=None, init=False)
    _dl_lock: threading.Lock = attrs.field(factory=threading.Lock, init=False)

    @property
    def dead_letters(self) -> Any:
        """The dead-letter store, built on first use (a run that dead-letters
        nothing never opens it)."""
        with self._dl_lock:
            if self._dead_letters is None:
                if self.dead_letter_factory is None:
                    raise RuntimeError("these backends have no dead-letter store")
                self._dead_letters = self.dead_letter_factory()
            return self._dead_letters


def make_backends(registry: Any, pipeline: Any, *, connect: bool = True) -> Backends:
    """Build the pipeline's backends. ``registry`` may be None for a cached
    plan: core's own ``file`` backend then needs no plugin loaded.

    The dead-letter store is the one registered under the backend's name;
    a backend that registers none keeps dead letters in the ``file`` store."""
    name = pipeline.backend.name
    if registry is None and name != "file":
        registry = pipeline.registry.get()
    return build_backends(
        registry, name, dict(pipeline.backend.options), pipeline.state_dir, connect=connect
    )


def build_backends(
    registry: Any, name: str, options: dict[str, Any], state_dir: Path, *, connect: bool = True
) -> Backends:
    """Call the three factories of backend ``name``. With ``connect``, each
    object that has a ``connect()`` method is asked to reach its service
    now, so that an unreachable one is reported before anything runs
    (``BackendUnavailable``, exit code 2) rather than as failed stages."""
    dl_factory: Callable[..., Any] = file_factories.dead_letter_store
    dl_options: dict[str, Any] = {}
    if registry is None and name == "file":
        factories = [
            file_factories.lock_backend,
            file_factories.idempotency_store,
            file_factories.checkpoint_store,
        ]
    else:
        kinds = ("lock_backends", "idempotency_stores", "checkpoint_stores")
        factories = [registry.get(kind, name) for kind in kinds]
        reg = registry.dead_letter_stores.get(name)
        if reg is not None:
            dl_factory, dl_options = reg.obj, options
    locks, idempotency, checkpoints = (f(dict(options), state_dir=state_dir) for f in factories)
    backends = Backends(
        name,
        locks,
        idempotency,
        checkpoints,
        dead_letter_factory=lambda: dl_factory(dict(dl_options), state_dir=state_dir),
    )
    if connect:
        for obj in (backends.locks, backends.idempotency, backends.checkpoints):
            hook = getattr(obj, "connect", None)
            if hook is not None:
                hook()
    return backends
