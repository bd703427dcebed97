"""Key-level (nested) differences between two JSON-shaped states.

A delta is a list of operations, each ``[op, path, arg]`` where ``path`` is a
list of dict keys (str) and list indices (int) from the root:

- ``["s", path, value]``: set (add or replace) the value at ``path``
  (``path == []`` replaces the whole state);
- ``["d", path]``: delete the dict key at ``path``;
- ``["a", path, values]``: extend the list at ``path`` with ``values``;
- ``["t", path, n]``: truncate the list at ``path`` to ``n`` items.

Dicts are compared key by key and lists index by index (with appends and
truncations at the end), recursing into values that changed; anything else
that changed is set whole. Unchanged containers are found with Python's
``==``, which runs at C speed but cannot tell equal numbers of different
types apart (``1``, ``1.0`` and ``True``): a value that changes only that way,
inside a container that is otherwise unchanged, is not recorded in a delta
(the next full checkpoint records it). Leaves are compared by type and value.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import compress, repeat
from operator import is_not, ne, or_
from typing import Any

from .errors import CheckpointStateError

__all__ = ["diff", "apply"]

_MISSING: Any = object()


def diff(old: Any, new: Any) -> list[list[Any]]:
    """The operations that turn ``old`` into ``new`` (``old`` is not changed)."""
    ops: list[list[Any]] = []
    _diff(old, new, [], ops)
    return ops


def _diff(old: Any, new: Any, path: list[Any], ops: list[list[Any]]) -> None:
    to = type(old)
    if to is dict and type(new) is dict:
        _diff_dict(old, new, path, ops)
    elif to is list and type(new) is list:
        _diff_list(old, new, path, ops)
    else:
        ops.append(["s", path, new])


def _changed(ov: Any, nv: Any, path: list[Any], ops: list[list[Any]]) -> None:
    """Record ``ov`` -> ``nv`` at ``path`` when they differ."""
    tn = type(nv)
    if tn is not type(ov):
        ops.append(["s", path, nv])
    elif ov != nv:
        if tn is dict or tn is list:
            _diff(ov, nv, path, ops)
        else:
            ops.append(["s", path, nv])


_BULK = 32
"""Containers longer than this find their changed items with C-level passes
(``map``/``compress`` over ``!=`` and ``type``) instead of a Python loop: a
dict of 500,000 values costs a few C passes, and Python code runs only for
the items that changed."""


def _suspects(olds: list[Any], news: list[Any]) -> Iterator[bool]:
    """Per item: True when the value or its type differs. When no type
    differs (the usual case, checked in one pass), only the values are
    compared."""
    if list(map(type, olds)) == list(map(type, news)):
        return map(ne, olds, news)
    return map(or_, map(ne, olds, news), map(is_not, map(type, olds), map(type, news)))


def _diff_dict(
    old: dict[str, Any], new: dict[str, Any], path: list[Any], ops: list[list[Any]]
) -> None:
    get = old.get
    keys: Any = new
    if len(new) > _BULK:
        if len(old) == len(new) and list(old) == list(new):
            olds = list(old.values())  # same keys in the same order: no lookups
        else:
            olds = list(map(get, new, repeat(_MISSING)))
        keys = compress(new, _suspects(olds, list(new.values())))
    added = 0  # every added key is a suspect (its old "value" is _MISSING)
    for k in keys:
        nv = new[k]
        ov = get(k, _MISSING)
        if ov is _MISSING:
            if type(k) is not str:
                raise CheckpointStateError(
                    f"checkpoint state keys must be str; {_where(path)} has key {k!r}"
                )
            added += 1
            ops.append(["s", [*path, k], nv])
        elif ov is not nv:
            _changed(ov, nv, [*path, k], ops)
    if len(new) - added < len(old):
        for k in old:
            if k not in new:
                ops.append(["d", [*path, k]])


def _diff_list(old: list[Any], new: list[Any], path: list[Any], ops: list[list[Any]]) -> None:
    n = min(len(old), len(new))
    if n and (len(old) == len(new) or old[:n] != new[:n]):
        olds, news = old[:n], new[:n]
        indices: Any = compress(range(n), _suspects(olds, news)) if n > _BULK else range(n)
        for i in indices:
            ov = olds[i]
            nv = news[i]
            if ov is not nv:
                _changed(ov, nv, [*path, i], ops)
    if len(new) > n:
        ops.append(["a", path, new[n:]])
    elif len(old) > n:
        ops.append(["t", path, n])


def _where(path: list[Any]) -> str:
    return "the state" if not path else "state" + "".join(f"[{p!r}]" for p in path)


def apply(state: Any, ops: list[list[Any]]) -> Any:
    """Apply ``ops`` to ``state`` in place; returns the new state (which is
    another object only when an op replaced the root)."""
    for op in ops:
        kind = op[0]
        path = op[1]
        if kind == "s":
            if not path:
                state = op[2]
                continue
            _walk(state, path[:-1])[path[-1]] = op[2]
        elif kind == "d":
            del _walk(state, path[:-1])[path[-1]]
        elif kind == "a":
            _walk(state, path).extend(op[2])
        elif kind == "t":
            del _walk(state, path)[op[2] :]
        else:
            raise ValueError(f"unknown delta operation {kind!r}")
    return state


def _walk(state: Any, path: list[Any]) -> Any:
    for p in path:
        state = state[p]
    return state
