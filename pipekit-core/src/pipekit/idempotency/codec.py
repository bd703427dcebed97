"""Results as JSON through cattrs: checked by type before the operation runs,
unstructured when it finishes, structured back on a replay. Never pickle.

:func:`check_type` walks a return type and raises ``TypeError`` naming the
part that cannot be stored, so that a function whose result could not be
replayed fails before it runs, not after.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as _dt
import decimal
import enum
import functools
import math
import types
import typing
import uuid
from collections.abc import Callable
from pathlib import PurePath
from typing import Any

import cattrs

from .. import _json
from .keys import _is_attrs

__all__ = [
    "check_type",
    "dump",
    "load",
    "converter",
    "type_name",
    "resolve_return_type",
    "UnresolvedAnnotation",
]

_SCALARS: tuple[type, ...] = (bool, int, float, str, type(None))
_SEQUENCES = {
    list,
    typing.List,  # noqa: UP006 - what an old-style annotation resolves to
    typing.Sequence,
    typing.MutableSequence,
    typing.Iterable,
    typing.Collection,
}
_SETS = {set, frozenset, typing.AbstractSet, typing.MutableSet}


_MICROSECOND = _dt.timedelta(microseconds=1)


def _is_namedtuple(t: Any) -> bool:
    return isinstance(t, type) and issubclass(t, tuple) and hasattr(t, "_fields")


def _is_path(t: Any) -> bool:
    return isinstance(t, type) and issubclass(t, PurePath)


def _field_types(t: Any) -> list[Any]:
    hints = typing.get_type_hints(t)
    return [hints.get(name, Any) for name in t._fields]


def _namedtuple_out(c: cattrs.Converter, t: Any) -> Callable[[Any], Any]:
    types_ = _field_types(t)
    return lambda v: [c.unstructure(x, ft) for x, ft in zip(v, types_)]


def _namedtuple_in(c: cattrs.Converter, t: Any) -> Callable[[Any, Any], Any]:
    types_ = _field_types(t)
    return lambda v, _t: t(*[c.structure(x, ft) for x, ft in zip(v, types_)])


# Value types beyond JSON: (type, to JSON, from JSON).
_VALUE_HOOKS: list[tuple[type, Callable[[Any], Any], Callable[[Any], Any]]] = [
    (float, lambda f: f if math.isfinite(f) else repr(f), float),  # JSON has no nan, inf
    (
        bytes,
        lambda b: base64.b64encode(b).decode("ascii"),
        lambda v: base64.b64decode(v, validate=True),
    ),
    (decimal.Decimal, str, decimal.Decimal),
    (_dt.datetime, _dt.datetime.isoformat, _dt.datetime.fromisoformat),
    (_dt.date, _dt.date.isoformat, _dt.date.fromisoformat),
    (_dt.time, _dt.time.isoformat, _dt.time.fromisoformat),
    (_dt.timedelta, lambda td: td // _MICROSECOND, lambda v: _dt.timedelta(microseconds=v)),
    (uuid.UUID, str, uuid.UUID),
]
_VALUE_TYPES = tuple(tp for tp, _out, _back in _VALUE_HOOKS)


def _type_ignored(back: Callable[[Any], Any]) -> Callable[[Any, Any], Any]:
    return lambda value, _type: back(value)


@functools.cache
def converter() -> cattrs.Converter:
    """The converter of stored results (made once)."""
    from cattrs.strategies import configure_union_passthrough

    c = cattrs.Converter()
    configure_union_passthrough(typing.Union[str, int, float, bool, None], c)  # noqa: UP007
    for tp, out, back in _VALUE_HOOKS:
        c.register_unstructure_hook(tp, out)
        c.register_structure_hook(tp, _type_ignored(back))
    c.register_unstructure_hook_factory(_is_namedtuple, lambda t: _namedtuple_out(c, t))
    c.register_structure_hook_factory(_is_namedtuple, lambda t: _namedtuple_in(c, t))
    c.register_unstructure_hook_func(_is_path, str)
    c.register_structure_hook_func(_is_path, lambda v, t: t(v))
    return c


def type_name(tp: Any) -> str:
    if isinstance(tp, type) and not typing.get_args(tp):
        return (
            tp.__qualname__ if tp.__module__ == "builtins" else f"{tp.__module__}.{tp.__qualname__}"
        )
    return repr(tp).replace("typing.", "")


def _fail(where: str, tp: Any, why: str) -> typing.NoReturn:
    raise TypeError(
        f"the result type {where} cannot be stored as JSON: {why}. Return a type pipekit "
        "can store and restore (JSON scalars, containers, datetime, Decimal, Path, UUID, "
        "enums, attrs classes, dataclasses; see docs/idempotency.md), or declare "
        "result_type=Any to store plain JSON values as they are"
    )


_as_any_cache: dict[Any, Any] = {}


def as_any(tp: Any) -> Any:
    """``tp`` with ``object`` replaced by ``Any`` (cattrs knows only the
    latter), at the top and in generic arguments. Cached: 11 us a call
    uncached, a tenth of a decorated call's hit."""
    try:
        return _as_any_cache[tp]
    except (KeyError, TypeError):
        pass
    out = _as_any(tp)
    try:
        _as_any_cache[tp] = out
    except TypeError:  # unhashable (e.g. a Literal of a list): not cached
        pass
    return out


def _as_any(tp: Any) -> Any:
    if tp is object:
        return Any
    args = typing.get_args(tp)
    origin = typing.get_origin(tp)
    if not args or origin is None or origin is typing.Literal:
        return tp
    new = tuple(_as_any(a) for a in args)
    if new == args:
        return tp
    if origin is typing.Union or origin is types.UnionType:
        return typing.Union[new]  # noqa: UP007
    copy_with = getattr(tp, "copy_with", None)
    return copy_with(new) if copy_with is not None else origin[new]


def check_type(tp: Any, where: str = "", _seen: set[int] | None = None) -> None:
    """Raise ``TypeError`` unless a value of type ``tp`` can be stored and
    read back as the same type."""
    _check(tp, where, _seen if _seen is not None else set(), False)


def _check(tp: Any, where: str, seen: set[int], in_class: bool) -> None:
    here = where or type_name(tp)
    if tp is Any or (tp is object and not in_class):
        return
    if tp is object:
        _fail(here, tp, "a field annotated 'object' cannot be read back; annotate it 'Any'")
    if tp is None or tp is type(None):
        return
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if isinstance(tp, typing.NewType):
        _check(tp.__supertype__, where, seen, in_class)
        return
    if origin in (typing.Annotated, typing.Final, typing.ClassVar):
        _check(args[0] if args else Any, where, seen, in_class)
        return
    if origin is typing.Literal:
        for v in args:
            if not isinstance(v, (*_SCALARS, enum.Enum)):
                _fail(here, tp, f"the literal {v!r} is not a JSON scalar")
        return
    if origin is typing.Union or origin is types.UnionType:
        members = [a for a in args if a is not type(None)]
        if len(members) == 1:
            _check(members[0], where, seen, in_class)
            return
        if all(m in _SCALARS for m in members):
            return
        if all(isinstance(m, type) and _is_attrs(m) for m in members):
            for m in members:
                _check(m, f"{here} | {type_name(m)}", seen, in_class)
            return
        _fail(
            here,
            tp,
            "a union may hold JSON scalars (str, int, float, bool, None) or attrs "
            "classes, not a mix: its members could not be told apart when read back",
        )
    if isinstance(tp, typing.TypeVar):
        _fail(here, tp, f"the type variable {tp} is not a concrete type")
    if origin is not None:
        if origin in _SEQUENCES or origin in _SETS:
            _check(args[0] if args else Any, f"{here}[item]", seen, in_class)
            return
        if origin is tuple:
            items = [args[0]] if len(args) == 2 and args[1] is Ellipsis else list(args)
            for i, a in enumerate(items):
                _check(a, f"{here}[{i}]", seen, in_class)
            return
        if origin in (dict, typing.Mapping, typing.MutableMapping, typing.Dict):  # noqa: UP006
            if args:
                _check_key(args[0], here)
                _check(args[1], f"{here}[value]", seen, in_class)
            return
        _fail(here, tp, f"{type_name(origin)} is not a supported container")
    if not isinstance(tp, type):
        _fail(here, tp, f"{tp!r} is not a type")
    if tp in _SEQUENCES or tp in _SETS or tp in (dict, tuple):
        return  # bare containers: items as plain JSON
    if issubclass(tp, _SCALARS) or issubclass(tp, _VALUE_TYPES):
        return
    if issubclass(tp, (enum.Enum, PurePath)):
        return
    if id(tp) in seen:
        return  # a recursive type: checked once
    fields = _class_fields(tp)
    if fields is None:
        _fail(here, tp, f"{type_name(tp)} has no JSON form (not an attrs class or a dataclass)")
    seen.add(id(tp))
    for name, field_type in fields:
        _check(field_type, f"{here}.{name}", seen, True)


def _class_fields(tp: Any) -> list[tuple[str, Any]] | None:
    """The (name, type) of the fields a record class is made with; None
    when ``tp`` is no attrs class, dataclass, named tuple or TypedDict."""
    if _is_attrs(tp):
        import attrs

        attrs.resolve_types(tp)
        return [(a.name, Any if a.type is None else a.type) for a in attrs.fields(tp) if a.init]
    if dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        return [(f.name, hints.get(f.name, Any)) for f in dataclasses.fields(tp) if f.init]
    if _is_namedtuple(tp):
        return list(zip(tp._fields, _field_types(tp)))
    if typing.is_typeddict(tp):
        return list(typing.get_type_hints(tp).items())
    return None


def _check_key(tp: Any, where: str) -> None:
    ok = isinstance(tp, type) and (
        issubclass(tp, (str, int, uuid.UUID))
        or (issubclass(tp, enum.Enum) and issubclass(tp, (str, int)))
    )
    if not ok and tp is not Any:
        _fail(
            where,
            tp,
            f"JSON object keys are strings; a mapping's keys may be str, int, UUID or a str/int "
            f"enum, not {type_name(tp)}",
        )


def dump(value: Any, tp: Any) -> Any:
    """The JSON value (as decoded from JSON) that stores ``value`` of type
    ``tp``; ``TypeError`` when it has no JSON form."""
    c = converter()
    tp = as_any(tp)
    try:
        data = c.unstructure(value) if tp is Any else c.unstructure(value, tp)
        data = _json.loads(_json.dumps(data))
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"the result of type {type_name(type(value))} cannot be stored as JSON: {exc}"
        ) from None
    try:
        load(data, tp)  # what a replay will do: fail now, not then
    except Exception as exc:
        raise TypeError(
            f"the result {type_name(type(value))} does not read back as the declared "
            f"{type_name(tp)}: {exc}"
        ) from None
    return data


def load(data: Any, tp: Any) -> Any:
    """The value of type ``tp`` stored as ``data`` by :func:`dump`."""
    tp = as_any(tp)
    if tp is Any:
        return data
    return converter().structure(data, tp)


class UnresolvedAnnotation(TypeError):
    """A return annotation names something not defined (yet)."""


def resolve_return_type(func: Callable[..., Any]) -> Any:
    """The return annotation of ``func``, resolved (in the function's module,
    and among the names its body uses from enclosing functions); raises
    ``TypeError`` when it has none or it cannot be resolved. Only the return
    annotation is looked at: a parameter's annotation may name anything."""
    annotations = getattr(func, "__annotations__", {})
    if "return" not in annotations:
        raise TypeError(
            f"{func.__qualname__} has no return annotation. pipekit.idempotent stores results "
            "as JSON and restores them by type: annotate the return type (e.g. -> dict[str, "
            "int], -> None), or pass result_type= (result_type=Any stores plain JSON as is)"
        )
    local: dict[str, Any] = {}
    code = getattr(func, "__code__", None)
    closure = getattr(func, "__closure__", None) or ()
    if code is not None:
        for name, cell in zip(code.co_freevars, closure):
            try:
                local[name] = cell.cell_contents
            except ValueError:  # an empty cell
                pass
    probe = types.FunctionType((lambda: None).__code__, getattr(func, "__globals__", {}))
    probe.__annotations__ = {"return": annotations["return"]}
    try:
        return typing.get_type_hints(probe, localns=local, include_extras=True)["return"]
    except Exception as exc:
        raise UnresolvedAnnotation(
            f"cannot resolve the return annotation of {func.__qualname__} "
            f"({annotations['return']!r}): {exc}; pass result_type= to pipekit.idempotent"
        ) from None
