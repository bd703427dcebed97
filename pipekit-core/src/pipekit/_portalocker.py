"""portalocker, imported when the first file lock is taken.

Importing portalocker imports its ``RedisLock`` (all of redis-py and
asyncio when redis is installed) and ``importlib.metadata``: about 0.2 s,
which a command that takes no file lock (``pipekit status`` on a cached
plan, ``pipekit plugins``) does not pay. Nothing about the import is
changed: this is a plain, deferred ``import portalocker``.
"""

from __future__ import annotations

from types import ModuleType

__all__ = ["portalocker"]


def portalocker() -> ModuleType:
    import portalocker  # deferred: see the module's docstring

    return portalocker
