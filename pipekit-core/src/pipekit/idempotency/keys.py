"""Deterministic idempotency keys: ``operation:hash``.

The hash is SHA-256 over a canonical, type-tagged, length-prefixed encoding of
the inputs, so that equal inputs give one key whatever the order of a dict's
or a set's items, and inputs of different types do not collide: the list
``[1, 2]``, the tuple ``(1, 2)`` and the string ``"[1, 2]"`` give three keys.

Rules (documented in docs/idempotency.md):

- ``None``, ``bool``, ``int``, ``str`` and ``bytes`` (``bytearray`` and
  ``memoryview`` encode as ``bytes``, to which they compare equal) are tagged
  by type: ``1``, ``1.0``, ``True`` and ``Decimal(1)`` are four keys, though
  Python calls them equal.
- ``float``: exact (``float.hex``); ``-0.0`` encodes as ``0.0`` (they are
  equal) and every NaN as one NaN (so a call with NaN can be repeated).
- ``Decimal``: by value (``Decimal("1.0")`` and ``Decimal("1")`` are one key,
  ``-0`` is ``0``, every NaN is one NaN).
- ``list`` and ``tuple`` (and named tuples) keep their order and differ from
  each other; ``set`` and ``frozenset`` are one kind, order-free; dict-like
  mappings are order-free, keyed by any encodable value.
- ``datetime``: timezone-aware only (a naive one is a ``TypeError``), encoded
  as the UTC instant, so the same instant in two zones is one key; ``date``,
  ``time`` (its offset if any) and ``timedelta`` by value.
- ``Path`` (any ``PurePath``): its string, per flavour; ``UUID`` by value.
- ``Enum`` members: their class and name (``Color.RED`` is not ``1``).
- attrs instances and dataclasses: their class and the fields that take part
  in ``==`` (``eq=False`` / ``compare=False`` fields are left out).
- Anything else is a ``TypeError`` naming where it was found: never ``repr()``,
  which may hold a memory address or change between versions.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import decimal
import enum
import hashlib
import math
import uuid
from collections.abc import Mapping
from pathlib import PurePath, PureWindowsPath
from typing import Any

__all__ = ["canonical_bytes", "digest", "make_key", "split_key", "KEY_VERSION"]

KEY_VERSION = b"pipekit-key-v1\0"
_UTC = _dt.UTC


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _len(n: int) -> bytes:
    return str(n).encode() + b":"


class _Encoder:
    __slots__ = ("out", "stack")

    def __init__(self) -> None:
        self.out: list[bytes] = []
        self.stack: set[int] = set()

    def chunk(self, tag: bytes, payload: bytes) -> None:
        self.out.append(tag + _len(len(payload)) + payload)

    def encode(self, value: Any, where: str) -> None:
        out = self.out
        if value is None:
            out.append(b"N")
            return
        cls = type(value)
        if cls is bool:
            out.append(b"T" if value else b"F")
            return
        if isinstance(value, enum.Enum):  # before int/str: IntEnum, StrEnum
            self.chunk(b"E", f"{_qualname(cls)}.{value.name}".encode())
            return
        if isinstance(value, int):
            self.chunk(b"i", str(int(value)).encode())
            return
        if isinstance(value, str):
            self.chunk(b"s", str(value).encode("utf-8", "surrogatepass"))
            return
        if isinstance(value, float):
            f = float(value)
            if math.isnan(f):
                text = "nan"
            elif f == 0.0:
                text = "0x0.0p+0"  # -0.0 == 0.0
            else:
                text = f.hex()
            self.chunk(b"f", text.encode())
            return
        if isinstance(value, (bytes, bytearray, memoryview)):
            self.chunk(b"b", bytes(value))
            return
        if isinstance(value, decimal.Decimal):
            self.chunk(b"m", _decimal_text(value).encode())
            return
        if isinstance(value, _dt.datetime):  # before date: a datetime is a date
            if value.tzinfo is None or value.utcoffset() is None:
                raise TypeError(
                    f"cannot make an idempotency key from {where}: the datetime "
                    f"{value.isoformat()} is naive; make it timezone-aware "
                    "(e.g. datetime.now(timezone.utc) or dt.replace(tzinfo=...))"
                )
            utc = value.astimezone(_UTC).replace(tzinfo=None, fold=0)
            self.chunk(b"D", utc.isoformat(timespec="microseconds").encode())
            return
        if isinstance(value, _dt.date):
            self.chunk(b"a", value.isoformat().encode())
            return
        if isinstance(value, _dt.time):
            offset = value.utcoffset()
            text = value.replace(tzinfo=None, fold=0).isoformat(timespec="microseconds")
            if offset is not None:
                text += f"@{offset.total_seconds():g}"
            self.chunk(b"h", text.encode())
            return
        if isinstance(value, _dt.timedelta):
            us = (value.days * 86400 + value.seconds) * 1_000_000 + value.microseconds
            self.chunk(b"r", str(us).encode())
            return
        if isinstance(value, PurePath):
            text = str(value).casefold() if isinstance(value, PureWindowsPath) else str(value)
            self.chunk(b"w" if isinstance(value, PureWindowsPath) else b"p", text.encode())
            return
        if isinstance(value, uuid.UUID):
            self.chunk(b"u", value.hex.encode())
            return
        self.composite(value, cls, where)

    def composite(self, value: Any, cls: type, where: str) -> None:
        ident = id(value)
        if ident in self.stack:
            raise TypeError(f"cannot make an idempotency key from {where}: it contains itself")
        self.stack.add(ident)
        try:
            if isinstance(value, (list, tuple)):
                self.out.append((b"l" if isinstance(value, list) else b"t") + _len(len(value)))
                for i, item in enumerate(value):
                    self.encode(item, f"{where}[{i}]")
            elif isinstance(value, (set, frozenset)):
                self.out.append(b"S" + _len(len(value)))
                self.out.extend(sorted(self.sub(item, f"{where}{{...}}") for item in value))
            elif isinstance(value, Mapping):
                pairs = []
                for k, v in value.items():
                    ek = self.sub(k, f"{where} key {k!r}" if _plain(k) else f"{where} key")
                    pairs.append(ek + self.sub(v, f"{where}[{k!r}]" if _plain(k) else where))
                pairs.sort()
                self.out.append(b"d" + _len(len(pairs)))
                self.out.extend(pairs)
            elif _is_attrs(cls):
                import attrs

                fields = [(a.name, getattr(value, a.name)) for a in attrs.fields(cls) if a.eq]
                self.record(b"A", cls, fields, where)
            elif dataclasses.is_dataclass(value) and not isinstance(value, type):
                fields = [
                    (f.name, getattr(value, f.name)) for f in dataclasses.fields(value) if f.compare
                ]
                self.record(b"C", cls, fields, where)
            else:
                raise TypeError(
                    f"cannot make an idempotency key from {where}: type "
                    f"{_qualname(cls)} has no canonical form. Pass a value of a supported "
                    "type (see docs/idempotency.md), leave the argument out of the key "
                    "(ignore=...), or give a key= function"
                )
        finally:
            self.stack.discard(ident)

    def record(self, tag: bytes, cls: type, fields: list[tuple[str, Any]], where: str) -> None:
        self.chunk(tag, _qualname(cls).encode())
        self.out.append(_len(len(fields)))
        for name, val in sorted(fields):
            self.chunk(b"s", name.encode())
            self.encode(val, f"{where}.{name}")

    def sub(self, value: Any, where: str) -> bytes:
        """The encoding of one value alone (for order-free containers)."""
        saved, self.out = self.out, []
        try:
            self.encode(value, where)
            return b"".join(self.out)
        finally:
            self.out = saved


def _plain(k: Any) -> bool:
    return isinstance(k, (str, int)) and len(repr(k)) <= 40


def _is_attrs(cls: type) -> bool:
    return getattr(cls, "__attrs_attrs__", None) is not None


def _decimal_text(d: decimal.Decimal) -> str:
    if d.is_nan():
        return "NaN"
    if d.is_infinite():
        return "-Infinity" if d < 0 else "Infinity"
    if d == 0:
        return "0"
    sign, digits, exp = d.as_tuple()
    assert isinstance(exp, int)
    ds = list(digits)
    while len(ds) > 1 and ds[-1] == 0:  # normalize without a context's precision
        ds.pop()
        exp += 1
    return f"{'-' if sign else ''}{''.join(map(str, ds))}e{exp}"


def canonical_bytes(value: Any, *, where: str = "value") -> bytes:
    """The canonical encoding of ``value`` (see the module's rules)."""
    enc = _Encoder()
    enc.encode(value, where)
    return b"".join(enc.out)


def digest(value: Any, *, where: str = "value") -> str:
    """SHA-256 (hex) of the canonical encoding of ``value``."""
    return hashlib.sha256(KEY_VERSION + canonical_bytes(value, where=where)).hexdigest()


def make_key(operation: str, inputs: Any = None, *, context: Any = None) -> str:
    """The idempotency key ``operation:hash`` of ``inputs`` under ``context``.

    ``context`` (e.g. ``{"tenant": "acme", "user": 42}``) is part of the hash,
    so the same inputs from two tenants give two keys; ``None`` adds nothing
    (a key without context equals the key it had before contexts existed).
    """
    check_operation(operation)
    doc = inputs if context is None else {"inputs": inputs, "context": context}
    where = "inputs" if context is None else "inputs or context"
    return f"{operation}:{digest(doc, where=where)}"


def check_operation(operation: str) -> None:
    if not isinstance(operation, str) or not operation:
        raise ValueError(f"an idempotency operation name must be a non-empty string: {operation!r}")
    if any(c.isspace() for c in operation):
        raise ValueError(f"an idempotency operation name may not contain whitespace: {operation!r}")


def split_key(key: str) -> tuple[str, str]:
    """``(operation, hash)`` of a key ``operation:hash``; ``(key, "")`` for a
    custom key without a colon."""
    operation, sep, tail = key.rpartition(":")
    return (operation, tail) if sep else (key, "")
