"""Turning states into payload bytes and back.

JSON-shaped states go through orjson (no sorting of keys: a checkpoint does
not need canonical bytes, and sorting 500,000 keys costs more than the rest of
the serialization). attrs instances are unstructured with cattrs (orjson's
preconfigured converter, so datetimes and the like become JSON), and
structured back when a type is given. ``bytes`` are stored as they are.
Nothing is ever pickled.

No silent conversions: a value that JSON would give back as something else
(a datetime, date or time, a UUID, a dataclass, an enum member, a float
that is NaN or infinite) is refused at save with a
:class:`CheckpointStateError` that names its type and where it is in the
state, before anything is written, as :class:`pipekit.PipelineState` does.
Tuples are saved as lists (documented); subclasses of dict, list, str, int
and float as their base type (equal values).
"""

from __future__ import annotations

import enum
import functools
import gc
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson

from .errors import CheckpointStateError

__all__ = ["JSON", "BYTES", "to_jsonable", "dumps", "loads", "structure", "type_name", "gc_paused"]

JSON = "json"
BYTES = "bytes"


@functools.cache
def _conv() -> Any:
    from cattrs.preconf.orjson import make_converter  # imported when an attrs state is saved

    return make_converter()


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


_STRICT = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
"""datetimes and dataclasses go to :func:`_default` (which refuses them)
instead of being turned into strings and dicts."""
_LEAVES = frozenset({str, int, bool, type(None)})


def _default(obj: Any) -> Any:
    if _is_attrs(obj):  # cattrs' JSON, as an attrs root's (loaded back with its type)
        return orjson.Fragment(_attrs_json(_conv().unstructure(obj)))
    if isinstance(obj, float) and not isinstance(obj, enum.Enum):
        return float(obj)
    raise TypeError(f"Type is not JSON serializable: {type(obj).__name__}")


def _attrs_json(unstructured: Any) -> bytes:
    """The JSON of what cattrs made of an attrs instance: its datetimes and
    the like are turned into strings that cattrs structures back, given
    the type."""
    return orjson.dumps(unstructured, default=_default)


def dumps(value: Any, what: str = "the checkpoint", *, attrs_root: bool = False) -> bytes:
    """The JSON of ``value``, or :class:`CheckpointStateError` when it
    would not load back as the same value (``what`` is named).
    ``attrs_root``: ``value`` is what cattrs made of an attrs state."""
    if attrs_root:
        try:
            return _attrs_json(value)
        except TypeError as exc:
            raise _refusal(value, what, str(exc)) from None
    try:
        payload = orjson.dumps(value, default=_default, option=_STRICT)
    except TypeError as exc:
        raise _refusal(value, what, str(exc)) from None
    if not _faithful(value):
        raise _refusal(value, what, "")
    return payload


def _finite(x: float) -> bool:
    return x - x == 0.0  # NaN and the infinities give NaN


def _faithful(value: Any) -> bool:
    """Whether every part of ``value`` loads back as it is (one quick walk,
    no paths: :func:`_problem` finds the part when it does not)."""
    stack = [value]
    pop, push = stack.pop, stack.append
    while stack:
        v = pop()
        t = type(v)
        if t is dict:
            items: Any = v.values()
        elif t is list or t is tuple:
            items = v
        elif t is float:
            if not _finite(v):
                return False
            continue
        elif t in _LEAVES:
            continue
        else:
            kind = _subclass_kind(v)
            if kind is None:
                return False
            if kind == "container":
                push(list(v.values()) if isinstance(v, dict) else list(v))
            continue
        for x in items:
            tx = type(x)
            if tx in _LEAVES:
                continue
            if tx is float:
                if not _finite(x):
                    return False
                continue
            push(x)
    return True


def _subclass_kind(v: Any) -> str | None:
    """For a value of no exact JSON type: ``"container"`` (a dict, list or
    tuple subclass), ``"leaf"`` (a str, int or finite float subclass, or an
    attrs instance, unstructured by cattrs), or None: it would change."""
    if isinstance(v, enum.Enum):
        return None
    if isinstance(v, (dict, list, tuple)):
        return "container"
    if isinstance(v, (str, int)) or _is_attrs(v):
        return "leaf"
    if isinstance(v, float):
        return "leaf" if _finite(v) else None
    return None


def _type_name(v: Any) -> str:
    t = type(v)
    return t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


def _describe(v: Any) -> str:
    """What ``v`` is and what it would come back as (an error's words:
    the modules are imported only here)."""
    import dataclasses
    import datetime as dt
    import uuid

    name = _type_name(v)
    if isinstance(v, enum.Enum):
        return f"an enum member {name}.{v.name}, which would come back as its value"
    if isinstance(v, float):
        return f"the float {v!r}, which JSON cannot hold (it would come back as null)"
    if dataclasses.is_dataclass(v):
        return f"a dataclass {name}, which would come back as a dict"
    if isinstance(v, (dt.datetime, dt.date, dt.time, uuid.UUID)):
        return f"a {name}, which would come back as a string"
    if isinstance(v, int):
        return f"an int ({v}) beyond the 64 bits a checkpoint holds"
    return f"a {name}, which is not JSON-shaped"


def _child(path: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if key.isidentifier() else f"{path}[{key!r}]"


def _problem(value: Any) -> tuple[str, str] | None:
    """(path, what is wrong) of the first part of ``value`` that would not
    load back as it is, in the order the value is written."""
    stack: list[tuple[Any, str]] = [(value, "$")]
    while stack:
        v, path = stack.pop()
        if isinstance(v, dict) and not isinstance(v, enum.Enum):
            for k in v:
                if not isinstance(k, str):
                    return path, f"has the key {k!r} ({_type_name(k)}); keys must be str"
            stack.extend((v[k], _child(path, k)) for k in reversed(list(v)))
        elif isinstance(v, (list, tuple)) and not isinstance(v, enum.Enum):
            stack.extend((x, _child(path, i)) for i, x in reversed(list(enumerate(v))))
        elif type(v) in _LEAVES or _is_attrs(v):
            if type(v) is int and not -(2**63) <= v < 2**64:
                return path, _describe(v)
            continue
        elif _subclass_kind(v) != "leaf":
            return path, _describe(v)
    return None


def _refusal(value: Any, what: str, detail: str) -> CheckpointStateError:
    found = _problem(value)
    if found is not None:
        path, problem = found
        where = "the value" if path == "$" else path
        reason = f"{where} is {problem}" if not problem.startswith("has ") else f"{where} {problem}"
    else:
        reason = detail or "it is not JSON-shaped"
    return CheckpointStateError(
        f"cannot save {what}: {reason}. A checkpoint state must be JSON-shaped (dicts "
        "with str keys, lists, str, int, float, bool, None), an attrs instance, or bytes: "
        "convert such a value yourself (e.g. an ISO string, str(uuid), a dict). Nothing "
        "was saved"
    )


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
