"""Config values built and taken apart without cattrs, where they already
have exactly the types their fields declare.

A pipeline file is mostly strings, lists of strings and small tables, and
for those the strict converter of :mod:`pipekit.config` changes nothing: its
hooks return a ``str``, ``int``, ``bool`` or ``float`` given exactly that
type as it is, a list or a table as an equal copy, and an attrs class by
calling it with the structured fields. Here such a value is checked against
the declared types and the attrs class is called directly: for 1,000 stages
that is a third of cattrs' time, and cattrs is not even imported.

Anything else gives :data:`NOT_EXACT`, and the caller uses cattrs, which then
also words the errors: a value of another type (an integer for a ``float``
field, which cattrs converts), an unknown or missing field, a validator
that refuses the value, and every type not listed here (tuples, sets,
``Literal``, enums, paths, most unions; fields with a converter or
``init=False``). So a value built here is always the one cattrs would have
built; ``tests/core/test_exact_structure.py`` checks that against cattrs
for every config and built-in params class.

Validators run as usual (attrs calls them). :mod:`pipekit.config` switches
them off process-wide while it words errors, under its ``_structure_lock``:
callers hold that lock around :func:`structure`.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable
from typing import Any

import attrs

__all__ = ["NOT_EXACT", "structure", "unstructure"]


class _NotExact:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NOT_EXACT"


NOT_EXACT: Any = _NotExact()
"""What :func:`structure` and :func:`unstructure` return for a value that
cattrs must handle."""

_LEAVES = (str, int, bool, float)
_PLAIN = frozenset({str, int, bool, float, type(None)})
_LIMIT = int | float | str  # config's ``max_failures``: a hook that returns it as it is

Fn = Callable[[Any], Any]
_BUILD: dict[Any, Fn | None] = {}
_TAKE: dict[Any, Fn | None] = {}


def structure(value: Any, typ: Any) -> Any:
    """``value`` as ``typ``, exactly as the config converter would build it,
    or :data:`NOT_EXACT`."""
    build = _cached(_BUILD, typ, _builder)
    return NOT_EXACT if build is None else build(value)


def unstructure(obj: Any) -> Any:
    """What the config converter's ``unstructure`` gives for the attrs
    instance ``obj`` (a dict of plain values), or :data:`NOT_EXACT`."""
    take = _cached(_TAKE, type(obj), _taker)
    return NOT_EXACT if take is None else take(obj)


def _cached(cache: dict[Any, Fn | None], typ: Any, make: Callable[[Any], Fn | None]) -> Fn | None:
    try:
        return cache[typ]
    except KeyError:
        pass
    except TypeError:  # not hashable: not a type of ours
        return None
    cache[typ] = None  # a class that holds itself is left to cattrs
    fn = make(typ)
    cache[typ] = fn
    return fn


def _union_args(typ: Any) -> tuple[Any, ...] | None:
    if isinstance(typ, types.UnionType) or typing.get_origin(typ) is typing.Union:
        return typing.get_args(typ)
    return None


def _attrs_fields(cls: Any) -> tuple[Any, ...] | None:
    """The fields of an attrs class this module can handle, else None."""
    if not (isinstance(cls, type) and attrs.has(cls)) or typing.get_args(cls):
        return None
    try:
        attrs.resolve_types(cls)
    except Exception:  # a name its annotations cannot resolve: cattrs says what
        return None
    fields = attrs.fields(cls)
    if any(not f.init or f.converter is not None or f.type is None for f in fields):
        return None
    return fields


# -- building ------------------------------------------------------------------


def _builder(typ: Any) -> Fn | None:
    if typ is Any:
        return _same
    if typ in _LEAVES:
        return _leaf(typ)
    if typ == _LIMIT:
        return _limit
    args = _union_args(typ)
    if args is not None:
        if len(args) == 2 and type(None) in args:
            inner = _cached(_BUILD, args[0] if args[1] is type(None) else args[1], _builder)
            return None if inner is None else _optional(inner)
        return None
    origin = typing.get_origin(typ) or typ
    args = typing.get_args(typ)
    if origin is list:
        return _list_of(args[0] if args else Any)
    if origin is dict:
        return _dict_of(args[1] if len(args) == 2 else Any)
    return _attrs_builder(typ)


def _same(value: Any) -> Any:
    return value


def _leaf(kind: type) -> Fn:
    def build(value: Any) -> Any:
        return value if type(value) is kind else NOT_EXACT

    return build


def _limit(value: Any) -> Any:
    return value if type(value) in (int, float, str) else NOT_EXACT


def _optional(inner: Fn) -> Fn:
    def build(value: Any) -> Any:
        return None if value is None else inner(value)

    return build


def _list_of(elem: Any) -> Fn | None:
    if elem is Any:
        return lambda value: list(value) if type(value) is list else NOT_EXACT
    if elem in _LEAVES:

        def leaves(value: Any) -> Any:
            if type(value) is list and all(type(v) is elem for v in value):
                return list(value)
            return NOT_EXACT

        return leaves
    inner = _cached(_BUILD, elem, _builder)
    if inner is None:
        return None

    def build(value: Any) -> Any:
        if type(value) is not list:
            return NOT_EXACT
        out = [inner(v) for v in value]
        return NOT_EXACT if any(v is NOT_EXACT for v in out) else out

    return build


def _dict_of(val: Any) -> Fn | None:
    # The converter's table hook structures the values, never the keys.
    if val is Any:
        return lambda value: dict(value) if type(value) is dict else NOT_EXACT
    inner = _cached(_BUILD, val, _builder)
    if inner is None:
        return None

    def build(value: Any) -> Any:
        if type(value) is not dict:
            return NOT_EXACT
        out = {k: inner(v) for k, v in value.items()}
        return NOT_EXACT if any(v is NOT_EXACT for v in out.values()) else out

    return build


def _attrs_builder(cls: Any) -> Fn | None:
    fields = _attrs_fields(cls)
    if fields is None:
        return None
    by_key: dict[str, tuple[str, Fn]] = {}
    for f in fields:
        inner = _cached(_BUILD, f.type, _builder)
        if inner is None:
            return None
        by_key[f.name] = (f.alias, inner)

    def build(value: Any) -> Any:
        if type(value) is not dict:
            return NOT_EXACT
        kwargs = {}
        for key, item in value.items():
            spec = by_key.get(key)
            if spec is None:  # unknown: cattrs names it
                return NOT_EXACT
            got = spec[1](item)
            if got is NOT_EXACT:
                return NOT_EXACT
            kwargs[spec[0]] = got
        try:
            return cls(**kwargs)
        except Exception:  # a missing field, a refused value: cattrs words it
            return NOT_EXACT

    return build


# -- taking apart ----------------------------------------------------------------


def _taker(typ: Any) -> Fn | None:
    if typ is Any:
        return _plain
    if typ in _LEAVES:
        return _leaf(typ)
    if typ == _LIMIT:
        return _limit
    args = _union_args(typ)
    if args is not None:
        if len(args) == 2 and type(None) in args:
            inner = _cached(_TAKE, args[0] if args[1] is type(None) else args[1], _taker)
            return None if inner is None else _optional(inner)
        return None
    origin = typing.get_origin(typ) or typ
    args = typing.get_args(typ)
    if origin is list:
        inner = _cached(_TAKE, args[0] if args else Any, _taker)
        return None if inner is None else _each(inner)
    if origin is dict:
        inner = _cached(_TAKE, args[1] if len(args) == 2 else Any, _taker)
        return None if inner is None else _each_value(inner)
    return _attrs_taker(typ)


def _plain(value: Any) -> Any:
    """A value held where any type goes: plain JSON-shaped data only."""
    kind = type(value)
    if kind in _PLAIN:
        return value
    if kind is list:
        out = [_plain(v) for v in value]
        return NOT_EXACT if any(v is NOT_EXACT for v in out) else out
    if kind is dict:
        return _each_value(_plain)(value)
    return NOT_EXACT


def _each(inner: Fn) -> Fn:
    def take(value: Any) -> Any:
        if type(value) is not list:
            return NOT_EXACT
        out = [inner(v) for v in value]
        return NOT_EXACT if any(v is NOT_EXACT for v in out) else out

    return take


def _each_value(inner: Fn) -> Fn:
    def take(value: Any) -> Any:
        if type(value) is not dict or any(type(k) is not str for k in value):
            return NOT_EXACT
        out = {k: inner(v) for k, v in value.items()}
        return NOT_EXACT if any(v is NOT_EXACT for v in out.values()) else out

    return take


def _attrs_taker(cls: Any) -> Fn | None:
    fields = _attrs_fields(cls)
    if fields is None:
        return None
    parts: list[tuple[str, Fn]] = []
    for f in fields:
        inner = _cached(_TAKE, f.type, _taker)
        if inner is None:
            return None
        parts.append((f.name, inner))

    def take(obj: Any) -> Any:
        if type(obj) is not cls:
            return NOT_EXACT
        out = {}
        for name, inner in parts:
            got = inner(getattr(obj, name))
            if got is NOT_EXACT:
                return NOT_EXACT
            out[name] = got
        return out

    return take
