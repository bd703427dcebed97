"""Structuring plain data (parsed TOML or JSON) into attrs classes with
one strict cattrs converter, and the problems of data that does not fit,
each with its path (``$.stages[1].retry.attempts``) and a message a person
reads: what the pipeline file's schema and ``PipelineState``'s schemas
share.

The converter is strict: a value must already have its field's type (a
bool is no int, a string is no list), unknown fields are errors, and each
collection is made as its own type (pinned here: cattrs' defaults for
abstract ones changed between releases, and canonical params, so
fingerprints, depend on them)."""

from __future__ import annotations

import difflib
import functools
import itertools
import threading
from collections import abc
from collections.abc import Callable, Iterable, Iterator
from typing import Any, get_args, get_origin

import attrs

__all__ = ["converter", "structure", "validate_raw", "structure_lock"]


class _Bad(ValueError):
    """A value of the wrong type or shape; its message is shown as it is."""


_KIND = {
    bool: "a boolean",
    int: "an integer",
    float: "a number",
    str: "a string",
    list: "a list",
    dict: "a table",
}


def _describe(value: Any) -> str:
    """``a string 'three'``, ``an integer 1``, ``a list [...]``: for messages."""
    kind = _KIND.get(type(value), f"a {type(value).__name__}")
    text = repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{kind} {text}"


def _number(value: Any, typ: type) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Bad(f"expected a number, got {_describe(value)}")
    try:
        return typ(value)
    except OverflowError:
        raise _Bad(
            f"expected a number, got an integer of {len(str(abs(value)))} digits (too large)"
        ) from None


def _exactly(kind: type, label: str) -> Callable[[Any, Any], Any]:
    """A hook that takes a value of ``kind`` as it is (a bool is no int)."""

    def hook(value: Any, _t: Any) -> Any:
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise _Bad(f"expected {label}, got {_describe(value)}")
        return value

    return hook


def _limit(value: Any, _t: Any) -> int | float | str:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise _Bad(
            "expected a count (integer), a fraction (number below 1) or a "
            f'percentage (string such as "5%"), got {_describe(value)}'
        )
    return value


def _items(conv: Any, t: Any, triples: Iterable[tuple[Any, Any, Any]]) -> list[tuple[Any, Any]]:
    """Structure each (key, value, type); gather errors with their index/key."""
    from cattrs.errors import IterableValidationError, IterableValidationNote

    out: list[tuple[Any, Any]] = []
    errors: list[Exception] = []
    for key, item, typ in triples:
        try:
            out.append((key, conv.structure(item, typ)))
        except Exception as exc:
            exc.__notes__ = [
                *getattr(exc, "__notes__", []),
                IterableValidationNote(f"Structuring {t!r} @ {key!r}", key, typ),
            ]
            errors.append(exc)
    if errors:
        raise IterableValidationError(f"While structuring {t!r}", errors, t)
    return out


def _table(value: Any) -> dict[Any, Any]:
    if not isinstance(value, dict):
        raise _Bad(f"expected a table, got {_describe(value)}")
    return value


def _dict_factory(conv: Any, t: Any) -> Callable[[Any, Any], dict[Any, Any]]:
    args = get_args(t)
    value_type = args[1] if len(args) == 2 else Any

    def hook(value: Any, _t: Any) -> dict[Any, Any]:
        return dict(_items(conv, t, ((k, v, value_type) for k, v in _table(value).items())))

    return hook


def _attrs_factory(conv: Any, t: Any) -> Callable[[Any, Any], Any]:
    base = conv.gen_structure_attrs_fromdict(t)
    return lambda value, _t: base(_table(value), _t)


_MADE_AS: dict[Any, Any] = {
    abc.Sequence: tuple,
    abc.Set: frozenset,
    abc.MutableSet: set,
    abc.MutableSequence: list,
}
_COLLECTIONS = (list, tuple, set, frozenset, *_MADE_AS)


def _collection_factory(conv: Any, t: Any) -> Callable[[Any, Any], Any]:
    """A list field given a string would otherwise become a list of its
    characters: ``inputs = "x.txt"`` must be an error, not ['x', '.', ...].
    Each collection is made as its own type (see the module's docstring); a
    fixed-length tuple checks its length."""
    origin = get_origin(t) or t
    args = get_args(t)
    make = _MADE_AS.get(origin, origin)
    fixed = origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis)

    def hook(value: Any, _t: Any) -> Any:
        if not isinstance(value, (list, tuple)):
            raise _Bad(f"expected a list, got {_describe(value)}")
        if fixed and len(value) != len(args):
            raise _Bad(f"expected a list of {len(args)} items, got {len(value)}")
        types = args if fixed else itertools.repeat(args[0] if args else Any)
        typed = ((i, v, a) for i, (v, a) in enumerate(zip(value, types)))
        return make(v for _, v in _items(conv, t, typed))

    return hook


# attrs validators are switched off (process-wide) while structuring, so that
# every validator's error can be reported with its field; the lock keeps two
# loads from switching them back on under each other's feet.
structure_lock = threading.RLock()


@functools.cache
def converter() -> Any:
    """The strict cattrs converter used for config and processor params
    (made once: it makes each class's structuring function once)."""
    import cattrs

    conv = cattrs.Converter(forbid_extra_keys=True)
    conv.register_structure_hook(float, _number)
    conv.register_structure_hook(int, _exactly(int, "an integer"))
    conv.register_structure_hook(str, _exactly(str, "a string"))
    conv.register_structure_hook(bool, _exactly(bool, "true or false"))
    conv.register_structure_hook(int | float | str, _limit)
    for kinds, factory in ((_COLLECTIONS, _collection_factory), ((dict,), _dict_factory)):
        conv.register_structure_hook_factory(
            lambda t, kinds=kinds: (get_origin(t) or t) in kinds, functools.partial(factory, conv)
        )
    conv.register_structure_hook_factory(
        lambda t: isinstance(t, type) and attrs.has(t), functools.partial(_attrs_factory, conv)
    )
    return conv


def _walk(
    exc: BaseException, path: str, typ: Any = None
) -> Iterator[tuple[str, BaseException, Any]]:
    """Every leaf error of a cattrs validation error: (path, error, type)."""
    from cattrs.errors import AttributeValidationNote, ClassValidationError, IterableValidationError

    if not isinstance(exc, (ClassValidationError, IterableValidationError)):
        yield path, exc, typ
        return
    noted, others = exc.group_exceptions()
    for sub, note in noted:
        if isinstance(note, AttributeValidationNote):
            where = f"{path}.{note.name}"
        else:
            where = (
                f"{path}.{note.index}" if isinstance(note.index, str) else f"{path}[{note.index}]"
            )
        yield from _walk(sub, where, note.type)
    for sub in others:
        yield from _walk(sub, path)


def _unknown_field(field: str, known: list[str]) -> str:
    close = difflib.get_close_matches(field, known, n=1)
    if close:
        return f"unknown field (did you mean {close[0]!r}?)"
    return "unknown field; known fields: " + (", ".join(known) if known else "none")


def _problem_text(exc: BaseException, typ: Any) -> str:
    if isinstance(exc, _Bad):
        return str(exc)
    if isinstance(exc, KeyError):
        return "required field missing"
    msg = str(exc)
    if typ is not None:
        tn = getattr(typ, "__name__", None) or repr(typ)
        return f"expected {tn}" + (f" ({msg})" if msg else "")
    return msg or type(exc).__name__


def _problems(exc: BaseException, prefix: str) -> list[tuple[str, str]]:
    """(path, message) for every leaf of a structuring error."""
    from cattrs.errors import ForbiddenExtraKeysError

    out: list[tuple[str, str]] = []
    for path, sub, typ in _walk(exc, prefix):
        if isinstance(sub, ForbiddenExtraKeysError):
            cl = getattr(sub, "cl", None)
            known = [a.name for a in attrs.fields(cl)] if cl is not None and attrs.has(cl) else []
            for field in sorted(sub.extra_fields):
                out.append((f"{path}.{field}", _unknown_field(field, known)))
        else:
            out.append((path, _problem_text(sub, typ)))
    return out


def _validate(inst: Any, path: str) -> list[tuple[str, str]]:
    """Run the attrs validators of ``inst`` and of the attrs instances in it,
    one field at a time, so that each failure names its field."""
    out: list[tuple[str, str]] = []
    for a in attrs.fields(type(inst)):
        value = getattr(inst, a.name)
        p = f"{path}.{a.name}"
        if a.validator is not None:
            try:
                a.validator(inst, a, value)
            except Exception as exc:
                out.append((p, str(exc) or type(exc).__name__))
        if attrs.has(type(value)):
            out.extend(_validate(value, p))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if attrs.has(type(item)):
                    out.extend(_validate(item, f"{p}[{i}]"))
    return out


def validate_raw(cls: type, raw: Any, path: str) -> list[tuple[str, str]]:
    """The validators' problems in a table that did not structure as a whole
    (a field of the wrong type elsewhere): each field that structures on its
    own is validated on its own, so that one run reports every problem.
    Only for pipekit's own config classes, whose validators look at nothing
    but the value."""
    if not isinstance(raw, dict):
        return []
    attrs.resolve_types(cls)

    def nested(typ: type, value: Any, p: str) -> list[tuple[str, str]]:
        inst, problems = structure(value, typ, p)
        return problems if inst is not None else validate_raw(typ, value, p)

    out: list[tuple[str, str]] = []
    for a in attrs.fields(cls):
        if a.name not in raw:
            continue
        p = f"{path}.{a.name}"
        value = raw[a.name]
        typ = a.type
        if isinstance(typ, type) and attrs.has(typ):
            out.extend(nested(typ, value, p))
            continue
        if get_origin(typ) is list and get_args(typ) and attrs.has(get_args(typ)[0]):
            if isinstance(value, list):
                for i, item in enumerate(value):
                    out.extend(nested(get_args(typ)[0], item, f"{p}[{i}]"))
            continue
        if a.validator is None:
            continue
        try:
            with structure_lock, attrs.validators.disabled():
                v = converter().structure(value, typ)
        except Exception:
            continue  # reported by the whole structuring
        try:
            a.validator(None, a, v)
        except Exception as exc:
            out.append((p, str(exc) or type(exc).__name__))
    return out


def structure(value: Any, cls: type, prefix: str) -> tuple[Any, list[tuple[str, str]]]:
    """Structure ``value`` as ``cls``. Returns (instance, problems): the
    instance is None when the value has the wrong shape or types; otherwise
    the problems are the validators' (the instance is still usable for
    further checks)."""
    with structure_lock:
        import cattrs

        # Structured with the validators on, a value that fits needs no
        # field-by-field walk. Only a value that does not fit is structured
        # again with them off, so that each problem is named by its field.
        try:
            return converter().structure(value, cls), []
        except Exception:
            pass
        try:
            with attrs.validators.disabled():
                inst = converter().structure(value, cls)
        except (cattrs.BaseValidationError, ValueError, TypeError, KeyError) as exc:
            return None, _problems(exc, prefix)
        except Exception as exc:  # e.g. a Params __attrs_post_init__
            return None, [(prefix, f"{type(exc).__name__}: {exc}")]
    return inst, _validate(inst, prefix)
