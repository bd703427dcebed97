"""Turning states into payload bytes and back.

JSON-shaped states go through orjson (no sorting of keys: a checkpoint does
not need canonical bytes, and sorting 500,000 keys costs more than the rest of
the serialization). attrs instances are unstructured with cattrs (orjson's
preconfigured converter, so datetimes and the like become JSON), and
structured back when a type is given. ``bytes`` are stored as they are.
Nothing is ever pickled.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson

from .errors import CheckpointStateError

__all__ = ["JSON", "BYTES", "to_jsonable", "dumps", "loads", "structure", "type_name", "gc_paused"]

JSON = "json"
BYTES = "bytes"

_converter: Any = None


def _conv() -> Any:
    global _converter
    if _converter is None:
        from cattrs.preconf.orjson import make_converter

        _converter = make_converter()
    return _converter


def _is_attrs(obj: Any) -> bool:
    return hasattr(type(obj), "__attrs_attrs__")


def to_jsonable(state: Any) -> Any:
    """An attrs root is unstructured (a fresh, JSON-shaped copy); anything
    else is returned as it is (nested attrs values are unstructured while
    serializing)."""
    if _is_attrs(state):
        try:
            return _conv().unstructure(state)
        except Exception as exc:
            raise CheckpointStateError(f"cannot unstructure the state: {exc}") from exc
    return state


def type_name(state: Any) -> str | None:
    if _is_attrs(state):
        t = type(state)
        return f"{t.__module__}.{t.__qualname__}"
    return None


def _default(obj: Any) -> Any:
    if _is_attrs(obj):
        return _conv().unstructure(obj)
    raise TypeError(f"Type is not JSON serializable: {type(obj).__name__}")


def dumps(value: Any) -> bytes:
    try:
        return orjson.dumps(value, default=_default)
    except TypeError as exc:
        raise CheckpointStateError(
            f"cannot save the state: {exc}. A checkpoint state must be JSON-shaped (dicts "
            "with str keys, lists, str, int, float, bool, None), an attrs instance, or bytes"
        ) from exc


def loads(data: bytes | memoryview) -> Any:
    with gc_paused():
        return orjson.loads(data)


def structure(value: Any, cls: Any) -> Any:
    try:
        return _conv().structure(value, cls)
    except Exception as exc:
        raise CheckpointStateError(f"cannot structure the checkpoint as {cls!r}: {exc}") from exc


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while building (or walking) a large
    tree of fresh objects: parsing 64 MB of JSON makes millions of dicts, and
    each generation-2 collection on the way walks all of them again (3x
    slower loads otherwise). JSON trees hold no cycles, so nothing is missed."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()
