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


def _attrs_fields(
    cls: Any, cache: dict[Any, Fn | None], make: Callable[[Any], Fn | None]
) -> list[tuple[Any, Fn]] | None:
    """Each field of attrs class ``cls`` with its function from ``make``, or
    None where this module cannot handle the class or one of its fields."""
    if not (isinstance(cls, type) and attrs.has(cls)) or typing.get_args(cls):
        return None
    try:
        attrs.resolve_types(cls)
    except Exception:  # a name its annotations cannot resolve: cattrs says what
        return None
    out = []
    for f in attrs.fields(cls):
        if not f.init or f.converter is not None or f.type is None:
            return None
        fn = _cached(cache, f.type, make)
        if fn is None:
            return None
        out.append((f, fn))
    return out


def _dispatch(
    typ: Any,
    cache: dict[Any, Fn | None],
    make: Callable[[Any], Fn | None],
    plain: Fn,
    list_of: Callable[[Fn], Fn],
    dict_of: Callable[[Fn], Fn],
    attrs_fn: Callable[[Any], Fn | None],
) -> Fn | None:
    """The function for ``typ``, built from the given pieces: one set to
    build values (:func:`_builder`), one to take them apart (:func:`_taker`)."""
    if typ is Any:
        return plain
    if typ in _LEAVES:
        return _leaf(typ)
    if typ == _LIMIT:
        return _limit
    args = _union_args(typ)
    if args is not None:
        if len(args) == 2 and type(None) in args:
            inner = _cached(cache, args[0] if args[1] is type(None) else args[1], make)
            return None if inner is None else _optional(inner)
        return None
    origin = typing.get_origin(typ) or typ
    args = typing.get_args(typ)
    if origin is list or origin is dict:
        elem = (
            (args[0] if args else Any) if origin is list else (args[1] if len(args) == 2 else Any)
        )
        inner = _cached(cache, elem, make)
        if inner is None:
            return None
        return list_of(inner) if origin is list else dict_of(inner)
    return attrs_fn(typ)


def _same(value: Any) -> Any:
    return value


def _leaf(kind: type) -> Fn:
    def build(value: Any) -> Any:
        return value if type(value) is kind else NOT_EXACT

    build.kind = kind  # type: ignore[attr-defined]  # lists of them: one pass, see _each
    return build


def _limit(value: Any) -> Any:
    return value if type(value) in (int, float, str) else NOT_EXACT


def _optional(inner: Fn) -> Fn:
    def build(value: Any) -> Any:
        return None if value is None else inner(value)

    return build


def _each(inner: Fn) -> Fn:
    """A list of what ``inner`` gives for each item."""
    if inner is _same:
        return lambda value: list(value) if type(value) is list else NOT_EXACT
    kind = getattr(inner, "kind", None)
    if kind is not None:  # a list of strings, say: no list of results to look through

        def leaves(value: Any) -> Any:
            if type(value) is list and all(type(v) is kind for v in value):
                return list(value)
            return NOT_EXACT

        return leaves

    def each(value: Any) -> Any:
        if type(value) is not list:
            return NOT_EXACT
        out = [inner(v) for v in value]
        return NOT_EXACT if any(v is NOT_EXACT for v in out) else out

    return each


def _each_value(inner: Fn, *, str_keys: bool) -> Fn:
    """A table of what ``inner`` gives for each value; the keys as they are
    (the converter's table hook structures values only), or required to be
    strings (to take apart: a key of another type is cattrs' to handle)."""

    def each(value: Any) -> Any:
        if type(value) is not dict or (str_keys and any(type(k) is not str for k in value)):
            return NOT_EXACT
        if inner is _same:
            return dict(value)
        out = {k: inner(v) for k, v in value.items()}
        return NOT_EXACT if any(v is NOT_EXACT for v in out.values()) else out

    return each


# -- building ------------------------------------------------------------------


def _builder(typ: Any) -> Fn | None:
    return _dispatch(
        typ,
        _BUILD,
        _builder,
        plain=_same,
        list_of=_each,
        dict_of=lambda inner: _each_value(inner, str_keys=False),
        attrs_fn=_attrs_builder,
    )


def _attrs_builder(cls: Any) -> Fn | None:
    fields = _attrs_fields(cls, _BUILD, _builder)
    if fields is None:
        return None
    by_key = {f.name: (f.alias, fn) for f, fn in fields}

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
    return _dispatch(
        typ,
        _TAKE,
        _taker,
        plain=_plain,
        list_of=_each,
        dict_of=lambda inner: _each_value(inner, str_keys=True),
        attrs_fn=_attrs_taker,
    )


def _plain(value: Any) -> Any:
    """A value held where any type goes: plain JSON-shaped data only."""
    kind = type(value)
    if kind in _PLAIN:
        return value
    if kind is list:
        return _plain_list(value)
    if kind is dict:
        return _plain_table(value)
    return NOT_EXACT


_plain_list = _each(_plain)
_plain_table = _each_value(_plain, str_keys=True)


def _attrs_taker(cls: Any) -> Fn | None:
    fields = _attrs_fields(cls, _TAKE, _taker)
    if fields is None:
        return None
    parts = [(f.name, fn) for f, fn in fields]

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
