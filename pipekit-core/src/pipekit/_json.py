"""One JSON codec for the whole package (orjson: strict, fast, canonical)."""

from __future__ import annotations

from typing import Any

import orjson

__all__ = ["dumps", "loads", "canonical", "JSONDecodeError"]

JSONDecodeError = orjson.JSONDecodeError
_CANON = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS


def _default(obj: Any) -> Any:
    """Canonical forms orjson lacks: sets become sorted lists, attrs
    instances dicts of their fields."""
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=lambda v: orjson.dumps(v, default=_default, option=_CANON))
    if hasattr(type(obj), "__attrs_attrs__"):
        import attrs

        return attrs.asdict(obj, recurse=False)
    raise TypeError(f"Type is not JSON serializable: {type(obj).__name__}")


def dumps(obj: Any, *, indent: bool = False) -> bytes:
    opts = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS
    if indent:
        opts |= orjson.OPT_INDENT_2
    return orjson.dumps(obj, default=_default, option=opts)


def loads(data: bytes | str) -> Any:
    return orjson.loads(data)


def canonical(obj: Any) -> bytes:
    """Canonical bytes of a JSON-shaped value: sorted keys, no whitespace."""
    return orjson.dumps(obj, default=_default, option=_CANON)
