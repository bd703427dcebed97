"""The ``pipekit`` entry points of the installed distributions, cached.

Scanning them means importing ``importlib.metadata`` (part of the
standard library's email package comes with it) and reading every
distribution's metadata: about 25 ms, paid by every run whose plan is not
cached (a first run, a run after an edit of the pipeline file). The list
is kept in the plan cache's folder beside the plans, valid while the
environment the plan cache checks is unchanged (pipekit's version, the
environment, Python, every ``sys.path`` folder's mtime: installing or
removing a distribution changes its folder, and the plugin environment
variables), and written only when none of those folders changed in the
last two seconds (as the plan cache does for the pipeline file: a change
within one mtime tick would go unseen). ``sys.path[0]`` (the script's folder, or the current one under
``python -m``) is left out of that key, as in the plan cache; a
distribution's metadata there (a ``*.dist-info`` or ``*.egg-info``)
means a scan. ``PIPEKIT_PLAN_CACHE=0`` turns this off too.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from . import _json

__all__ = ["EntryPoint", "load", "scan"]

FORMAT = 1


class EntryPoint:
    """What pipekit needs of an entry point: ``name``, ``value``
    (``module`` or ``module:attr.attr``) and its distribution's name and
    version."""

    __slots__ = ("dist_name", "dist_version", "name", "value")

    def __init__(self, name: str, value: str, dist_name: str, dist_version: str) -> None:
        self.name = name
        self.value = value
        self.dist_name = dist_name
        self.dist_version = dist_version

    def load(self) -> Any:
        """Import the module and get the attribute, as ``importlib.metadata``
        does."""
        import importlib

        module_name, _, attrs = self.value.partition(":")
        obj: Any = importlib.import_module(module_name.strip())
        for attr in filter(None, attrs.split("[", 1)[0].strip().split(".")):
            obj = getattr(obj, attr)
        return obj

    def as_list(self) -> list[str]:
        return [self.name, self.value, self.dist_name, self.dist_version]


def scan(group: str) -> list[EntryPoint]:
    """The group's entry points from ``importlib.metadata``, by name."""
    from importlib.metadata import entry_points

    out = []
    for ep in sorted(entry_points(group=group), key=lambda e: e.name):
        dist = getattr(ep, "dist", None)
        dist_name = dist.metadata["Name"] if dist is not None else "?"
        dist_version = dist.version if dist is not None else "?"
        out.append(EntryPoint(ep.name, ep.value, dist_name, dist_version))
    return out


def _path() -> Any:
    from .plancache import _cache_dir

    return _cache_dir() / "entry-points.json"


def _metadata_in_first_path() -> bool:
    first = sys.path[0] if sys.path else ""
    try:
        names = os.listdir(first or ".")
    except OSError:
        return False
    return any(n.endswith((".dist-info", ".egg-info")) for n in names)


def load(group: str) -> list[EntryPoint]:
    """The group's entry points: from the cache while the environment is
    unchanged, else scanned (and the cache written)."""
    from . import plancache

    if not plancache.enabled() or _metadata_in_first_path():
        return scan(group)
    path = _path()
    env: list[Any] = plancache._environment_sig(None)
    sig: list[Any] = [FORMAT, group, env]
    try:
        doc = _json.loads(path.read_bytes())
        if doc.get("sig") == sig:
            return [EntryPoint(*row) for row in doc["entry_points"]]
    except (OSError, ValueError, TypeError, AttributeError, KeyError):
        pass
    eps = scan(group)
    # A folder changed in the last moments may change again within the same
    # mtime tick, unseen: cache only what has been still for a while.
    newest = max((m or 0 for _, m in env[-1]), default=0)
    if newest > time.time_ns() - plancache.RACY_NS:
        return eps
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(_json.dumps({"sig": sig, "entry_points": [e.as_list() for e in eps]}))
        os.replace(tmp, path)  # a cache: no fsync, a torn write is read as a miss
    except OSError:
        pass
    return eps
