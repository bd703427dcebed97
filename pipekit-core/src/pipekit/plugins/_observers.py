"""Calling observer hooks so that a plugin that raises cannot harm a run."""

from __future__ import annotations

import logging
import threading
from typing import Any

__all__ = ["Observers"]

log = logging.getLogger("pipekit.plugins")


class Observers:
    """Calls each plugin's observer hookimpl on its own; an exception is
    logged with the plugin's name and otherwise ignored. Calls are serialized
    so that plugins need not be thread-safe."""

    def __init__(self, plugin_manager: Any) -> None:
        self._pm = plugin_manager
        self._lock = threading.Lock()
        self.errors: list[str] = []

    @property
    def active(self) -> bool:
        """Whether any plugin is loaded to observe (calls are free when not)."""
        return self._pm is not None

    def call(self, hook: str, **kwargs: Any) -> None:
        if self._pm is None:
            return
        caller = getattr(self._pm.hook, hook)
        impls = caller.get_hookimpls()
        if not impls:
            return
        with self._lock:
            for impl in impls:
                args = {name: kwargs[name] for name in impl.argnames if name in kwargs}
                try:
                    impl.function(**args)
                except Exception as exc:
                    msg = (
                        f"plugin {impl.plugin_name!r} raised in {hook}: {type(exc).__name__}: {exc}"
                    )
                    self.errors.append(msg)
                    log.warning("%s (ignored)", msg)
