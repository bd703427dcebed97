"""Import portalocker without its optional Redis lock.

portalocker's ``__init__`` imports its ``RedisLock``, and so all of redis-py
and asyncio, whenever redis is installed: 0.1-0.3 s on every run that takes
a lock, for a class pipekit never uses. While portalocker is imported,
``import redis`` is made to fail (portalocker then keeps a stub), unless redis
is already imported. Nothing else imports in those few milliseconds: the
first lock is taken before stage threads start their work.
"""

from __future__ import annotations

import sys
import threading
from types import ModuleType

__all__ = ["portalocker"]

_lock = threading.Lock()
_module: ModuleType | None = None


def portalocker() -> ModuleType:
    global _module
    if _module is not None:  # set only once the import has completed
        return _module
    with _lock:
        if _module is not None:
            return _module
        blocked = "redis" not in sys.modules
        if blocked:
            sys.modules["redis"] = None  # type: ignore[assignment]
        try:
            import portalocker
        finally:
            if blocked and sys.modules.get("redis", 0) is None:
                del sys.modules["redis"]
        _module = portalocker
    return portalocker
