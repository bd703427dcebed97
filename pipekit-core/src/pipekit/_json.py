"""One JSON codec for the whole package (orjson: strict, fast, canonical)."""

from __future__ import annotations

from typing import Any

import orjson

__all__ = ["dumps", "loads", "canonical", "JSONDecodeError"]

JSONDecodeError = orjson.JSONDecodeError
_CANON = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS


def dumps(obj: Any, *, indent: bool = False) -> bytes:
    opts = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS
    if indent:
        opts |= orjson.OPT_INDENT_2
    return orjson.dumps(obj, option=opts)


def loads(data: bytes | str) -> Any:
    return orjson.loads(data)


def canonical(obj: Any) -> bytes:
    """Canonical bytes of a JSON-shaped value: sorted keys, no whitespace."""
    return orjson.dumps(obj, option=_CANON)
