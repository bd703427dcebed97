"""Import portalocker without its optional Redis lock.

portalocker's ``__init__`` imports its ``RedisLock``, and so all of redis-py
and asyncio, whenever redis is installed: 0.1-0.3 s on every run that takes
a lock, for a class pipekit never uses. While portalocker is imported,
``import redis`` is made to fail (portalocker then keeps a stub), unless redis
is already imported. Nothing else imports in those few milliseconds: the
first lock is taken before stage threads start their work.

Its ``__about__`` module also imports ``importlib.metadata`` (10-30 ms, much
of the standard library's email package) only to read portalocker's own
version. We give it ``portalocker.__about__`` with the same names, reading
the version from the ``portalocker-<version>.dist-info`` folder beside the
package (one directory listing).
"""

from __future__ import annotations

import sys
import threading
from types import ModuleType

__all__ = ["portalocker"]

_lock = threading.Lock()
_module: ModuleType | None = None


def _about() -> ModuleType:
    import importlib.util
    import os

    about = ModuleType("portalocker.__about__")
    about.__package_name__ = "portalocker"  # type: ignore[attr-defined]
    about.__author__ = "Rick van Hattem"  # type: ignore[attr-defined]
    about.__email__ = "wolph@wol.ph"  # type: ignore[attr-defined]
    about.__description__ = "Wraps the portalocker recipe for easy usage"  # type: ignore[attr-defined]
    about.__url__ = "https://github.com/WoLpH/portalocker"  # type: ignore[attr-defined]
    version = "unknown"
    spec = importlib.util.find_spec("portalocker")
    if spec is not None and spec.origin:
        site = os.path.dirname(os.path.dirname(spec.origin))
        try:
            for name in os.listdir(site):
                if name.startswith("portalocker-") and name.endswith(".dist-info"):
                    version = name[len("portalocker-") : -len(".dist-info")]
                    break
        except OSError:
            pass
    about.__version__ = version  # type: ignore[attr-defined]
    return about


def portalocker() -> ModuleType:
    global _module
    if _module is not None:  # set only once the import has completed
        return _module
    with _lock:
        if _module is not None:
            return _module
        if "portalocker.__about__" not in sys.modules:
            sys.modules["portalocker.__about__"] = _about()
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
