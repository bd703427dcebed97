"""Idempotency keys: deterministic, order-free where Python is, type-tagged,
and a TypeError for anything without a canonical form."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import math
import random
import subprocess
import sys
import uuid
from decimal import Decimal
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pipekit import make_key
from pipekit.idempotency.keys import digest


class Color(enum.Enum):
    RED = 1
    GREEN = 2


class Level(enum.IntEnum):
    LOW = 1


@attrs.define
class Point:
    x: int
    y: int
    note: str = attrs.field(default="", eq=False)


@dataclasses.dataclass
class Box:
    w: int
    h: int
    cache: Any = dataclasses.field(default=None, compare=False)


UTC = dt.UTC

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=8),
    st.binary(max_size=8),
    st.decimals(allow_nan=False, allow_infinity=False, places=3),
    st.dates(),
    st.datetimes(timezones=st.just(UTC)),
    st.sampled_from(list(Color) + list(Level)),
    st.uuids(),
    st.builds(PurePosixPath, st.text(alphabet="ab/", min_size=1, max_size=5)),
)
hashable = st.one_of(scalars, st.frozensets(scalars, max_size=3))
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=4).map(tuple),
        st.dictionaries(st.one_of(st.text(max_size=5), st.integers()), inner, max_size=4),
        st.frozensets(hashable, max_size=4),
        st.builds(Point, st.integers(), st.integers()),
    ),
    max_leaves=12,
)


def shuffled(value: Any, rnd: random.Random) -> Any:
    """The same value with every dict (and set) built in another order."""
    if isinstance(value, dict):
        items = [(k, shuffled(v, rnd)) for k, v in value.items()]
        rnd.shuffle(items)
        return dict(items)
    if isinstance(value, list):
        return [shuffled(v, rnd) for v in value]
    if isinstance(value, tuple):
        return tuple(shuffled(v, rnd) for v in value)
    if isinstance(value, frozenset):
        items = list(value)
        rnd.shuffle(items)
        return frozenset(items)
    return value


def same(a: Any, b: Any) -> bool:
    """Equal, and of the same kinds all the way down (the key's notion of
    'equal inputs': 1 and 1.0 are different inputs, -0.0 and 0.0 are not)."""
    if isinstance(a, (set, frozenset)) and isinstance(b, (set, frozenset)):
        return len(a) == len(b) and all(any(same(x, y) for y in b) for x in a)
    kind = {bytes: bytes, bytearray: bytes}
    if kind.get(type(a), type(a)) is not kind.get(type(b), type(b)):
        return False
    if isinstance(a, dict):
        return len(a) == len(b) and all(
            any(same(ka, kb) and same(va, vb) for kb, vb in b.items()) for ka, va in a.items()
        )
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, Point):
        return same(a.x, b.x) and same(a.y, b.y)
    if isinstance(a, dt.datetime):
        return a == b
    if isinstance(a, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    return bool(a == b)


@settings(max_examples=200, deadline=None)
@given(values, st.randoms(use_true_random=False))
def test_equal_inputs_in_any_order_give_one_key(value: Any, rnd: random.Random) -> None:
    assert make_key("op", value) == make_key("op", shuffled(value, rnd))


@settings(max_examples=400, deadline=None)
@given(values, values)
def test_different_inputs_give_different_keys(a: Any, b: Any) -> None:
    assert (make_key("op", a) == make_key("op", b)) == same(a, b)


def test_keys_are_stable_across_processes_and_hash_seeds() -> None:
    code = (
        "from pipekit import make_key; "
        "print(make_key('op', {'b': {'x', 'y', 'z'}, 'a': frozenset({'q', 'r'}), 'c': [1, (2, 3)]}))"
    )
    keys = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": seed, "PATH": "/usr/bin:/bin"},
        ).stdout.strip()
        for seed in ("1", "2", "3")
    }
    assert len(keys) == 1
    # and the format is pinned: a change of encoding must be deliberate (KEY_VERSION)
    assert keys == {
        make_key("op", {"a": frozenset({"r", "q"}), "c": [1, (2, 3)], "b": {"z", "y", "x"}})
    }


def test_key_format_is_operation_colon_hash() -> None:
    key = make_key("billing.charge", {"order": 1})
    op, _, h = key.rpartition(":")
    assert op == "billing.charge" and len(h) == 64 and int(h, 16) >= 0
    assert key == f"billing.charge:{digest({'order': 1})}"


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ([1, 2], (1, 2)),
        ([1, 2], "[1, 2]"),
        ((1, 2), "(1, 2)"),
        (1, 1.0),
        (1, True),
        (0, False),
        (1, Decimal(1)),
        ("1", 1),
        (b"a", "a"),
        (None, "None"),
        (None, 0),
        ([], ()),
        ({}, []),
        (frozenset(), []),
        ({"a": 1}, [("a", 1)]),
        (Color.RED, 1),
        (Level.LOW, 1),
        (Point(1, 2), {"x": 1, "y": 2}),
        (Point(1, 2), Box(1, 2)),
        (dt.date(2024, 1, 2), "2024-01-02"),
        (PurePosixPath("a"), "a"),
        (["ab", "c"], ["a", "bc"]),
        ({"a": "bc"}, {"ab": "c"}),
        ([[1], 2], [1, [2]]),
    ],
)
def test_inputs_of_different_types_do_not_collide(a: Any, b: Any) -> None:
    assert make_key("op", a) != make_key("op", b)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (0.0, -0.0),
        (float("nan"), float("nan")),
        (float("nan"), -float("nan")),
        (Decimal("1.0"), Decimal("1")),
        (Decimal("100"), Decimal("1E+2")),
        (Decimal("-0"), Decimal("0.00")),
        (Decimal("NaN"), Decimal("-NaN")),
        ({1, 2}, frozenset({2, 1})),
        (b"ab", bytearray(b"ab")),
        (
            dt.datetime(2024, 1, 1, 12, tzinfo=UTC),
            dt.datetime(2024, 1, 1, 13, tzinfo=dt.timezone(dt.timedelta(hours=1))),
        ),
        (Point(1, 2, note="a"), Point(1, 2, note="b")),  # eq=False field
        (Box(1, 2, cache=object()), Box(1, 2)),  # compare=False field
        (Path("a/b"), PurePosixPath("a/b")),
        (PureWindowsPath("C:/A"), PureWindowsPath("c:/a")),
        (uuid.UUID(int=5), uuid.UUID(int=5)),
        (dt.timedelta(days=1), dt.timedelta(hours=24)),
        (Color(1), Color.RED),
    ],
)
def test_equal_inputs_give_one_key(a: Any, b: Any) -> None:
    assert make_key("op", a) == make_key("op", b)


def test_context_is_part_of_the_key() -> None:
    plain = make_key("op", {"x": 1})
    acme = make_key("op", {"x": 1}, context={"tenant": "acme"})
    other = make_key("op", {"x": 1}, context={"tenant": "other"})
    assert len({plain, acme, other}) == 3
    assert acme == make_key("op", {"x": 1}, context={"tenant": "acme"})


def test_operation_is_part_of_the_key() -> None:
    assert make_key("a", 1) != make_key("b", 1)
    with pytest.raises(ValueError, match="non-empty"):
        make_key("", 1)
    with pytest.raises(ValueError, match="whitespace"):
        make_key("has space", 1)


def test_a_naive_datetime_is_refused_with_advice() -> None:
    with pytest.raises(TypeError, match=r"naive; make it timezone-aware") as err:
        make_key("op", {"when": [dt.datetime(2024, 1, 1)]})
    assert "inputs['when'][0]" in str(err.value)


class Opaque:
    def __repr__(self) -> str:
        return "Opaque()"


@pytest.mark.parametrize(
    "value",
    [Opaque(), object(), {"k": lambda: 1}, [1, {2, Opaque()}], {Opaque(): 1}, 1j, range(3)],
)
def test_no_canonical_form_is_a_type_error_never_repr(value: Any) -> None:
    with pytest.raises(TypeError, match="has no canonical form"):
        make_key("op", value)


def test_the_error_says_where() -> None:
    with pytest.raises(TypeError, match=r"inputs\['a'\]\[1\]: type .*Opaque"):
        make_key("op", {"a": [1, Opaque()]})


def test_a_container_holding_itself_is_refused() -> None:
    loop: list[Any] = [1]
    loop.append(loop)
    with pytest.raises(TypeError, match="contains itself"):
        make_key("op", loop)


def test_the_same_object_twice_is_fine() -> None:
    shared = [1, 2]
    assert make_key("op", [shared, shared]) == make_key("op", [[1, 2], [1, 2]])
