"""``pipekit.exact_structure`` builds exactly what cattrs builds, or nothing.

Values are generated from each class's declared field types, with the
shapes people get wrong mixed in (an integer for a float, a bool for an
integer, a string for a list, an unknown key, a missing field, a tuple);
for each one, either the exact path declines or cattrs builds an equal
value of the very same types all the way down. The same holds for taking
params apart, down to the canonical bytes a fingerprint is made of.
"""

from __future__ import annotations

import subprocess
import sys
import typing
from typing import Any

import attrs
import pytest
from conftest import Project
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pipekit import _json
from pipekit import config as C
from pipekit.exact_structure import NOT_EXACT, structure, unstructure
from pipekit_stages.records import FilterParams, ReplaceParams
from pipekit_stages.shell import ShellParams

CONFIG_CLASSES = [
    C.StageConfig,
    C.PipelineConfig,
    C.RetryPolicy,
    C.RecordRetryPolicy,
    C.CheckpointPolicy,
    C.BackendConfig,
    C.NetworkConfig,
    C.StageNetworkConfig,
]
PARAMS_CLASSES = [ShellParams, FilterParams, ReplaceParams]

_TEXT = st.sampled_from(["a", "b-1", "up_2", "tr a-z A-Z < {input} > {output}", "x y", ""])
_JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.floats(-2, 2) | _TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
    max_leaves=6,
)


def values(typ: Any, depth: int = 0) -> st.SearchStrategy[Any]:
    """Values for a field of type ``typ``: mostly right, sometimes not."""
    origin, args = typing.get_origin(typ), typing.get_args(typ)
    wrong = st.integers(0, 2) | st.booleans() | st.tuples(_TEXT) | st.none()
    if typ is str:
        good: st.SearchStrategy[Any] = _TEXT | st.text(max_size=4)
    elif typ is bool:
        good = st.booleans()
    elif typ is int:
        good = st.integers(-2, 5)
    elif typ is float:
        good = st.floats(-1, 100, allow_nan=False) | st.integers(1, 5)
    elif typ is Any:
        good = _JSONISH
    elif origin is list or typ is list:
        good = st.lists(values(args[0] if args else Any, depth + 1), max_size=3) | _TEXT
    elif origin is dict or typ is dict:
        good = st.dictionaries(
            _TEXT, values(args[1] if len(args) == 2 else Any, depth + 1), max_size=3
        )
    elif attrs.has(typ) and depth < 3:
        good = tables(typ, depth + 1)
    elif args:  # a union
        good = st.one_of([values(a, depth + 1) for a in args])
    else:
        good = st.nothing()
    return st.one_of(good, good, good, wrong)


def tables(cls: type, depth: int = 0) -> st.SearchStrategy[dict[str, Any]]:
    attrs.resolve_types(cls)
    fields = attrs.fields(cls)

    @st.composite
    def build(draw: Any) -> dict[str, Any]:
        out = {}
        for f in fields:
            required = f.default is attrs.NOTHING
            if draw(st.floats(0, 1)) < (0.97 if required else 0.4):
                out[f.name] = draw(values(f.type, depth))
        if draw(st.floats(0, 1)) < 0.05:
            out["unknown_key"] = 1
        return out

    return build()


def identical(a: Any, b: Any) -> bool:
    """Equal, and of the same types all the way down."""
    if type(a) is not type(b):
        return False
    if attrs.has(type(a)):
        return all(identical(getattr(a, f.name), getattr(b, f.name)) for f in attrs.fields(type(a)))
    if isinstance(a, list):
        return len(a) == len(b) and all(map(identical, a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(identical(a[k], b[k]) for k in a)
    return bool(a == b)


def full(raw: Any, cls: type) -> Any:
    """cattrs' result with the validators on, or the exception it raises."""
    with C._structure_lock:
        try:
            return C.converter().structure(raw, cls)
        except Exception as exc:
            return exc


def check(cls: type, raw: Any) -> None:
    with C._structure_lock:
        exact = structure(raw, cls)
    reference = full(raw, cls)
    if exact is NOT_EXACT:
        return
    assert not isinstance(reference, Exception), (raw, reference)
    assert identical(exact, reference), (raw, exact, reference)


@pytest.mark.parametrize("cls", CONFIG_CLASSES + PARAMS_CLASSES, ids=lambda c: c.__name__)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_the_exact_path_builds_what_cattrs_builds_or_declines(cls: type, data: Any) -> None:
    check(cls, data.draw(tables(cls)))


@pytest.mark.parametrize("cls", PARAMS_CLASSES, ids=lambda c: c.__name__)
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_params_taken_apart_exactly_give_cattrs_canonical_bytes(cls: type, data: Any) -> None:
    inst = full(data.draw(tables(cls)), cls)
    if isinstance(inst, Exception):
        return
    plain = unstructure(inst)
    reference = C.converter().unstructure(inst)
    if plain is NOT_EXACT:
        return
    assert identical(plain, reference), (plain, reference)
    assert _json.canonical(plain) == _json.canonical(reference)


@pytest.mark.parametrize(
    ("cls", "raw"),
    [
        (C.StageConfig, {"name": "s", "uses": "shell", "timeout": 5}),  # int for a float
        (C.StageConfig, {"name": "s", "uses": "shell", "retry": {"attempts": True}}),
        (C.StageConfig, {"name": "s", "uses": "shell", "inputs": "in.txt"}),  # not a list
        (C.StageConfig, {"name": "s", "uses": "shell", "colour": "red"}),  # unknown field
        (C.StageConfig, {"uses": "shell"}),  # missing field
        (C.StageConfig, {"name": "not a name", "uses": "shell"}),  # refused by a validator
        (ShellParams, {"cmd": "x", "env": {"A": 1}}),
    ],
)
def test_what_cattrs_converts_or_refuses_is_left_to_it(cls: type, raw: Any) -> None:
    with C._structure_lock:
        assert structure(raw, cls) is NOT_EXACT


def test_common_values_take_the_exact_path() -> None:
    """The point of the module: a usual stage table and its params are built
    without cattrs (else this module would only cost time)."""
    raw = {
        "name": "s",
        "uses": "shell",
        "inputs": ["a"],
        "outputs": ["b"],
        "params": {"cmd": "cp {input} {output}", "env": {"A": "1"}},
        "retry": {"attempts": 3, "backoff": 0.25},
        "timeout": 5.0,
        "max_failures": "5%",
    }
    with C._structure_lock:
        cfg = structure(raw, C.StageConfig)
        params = structure(cfg.params, ShellParams)
    assert identical(cfg, full(raw, C.StageConfig))
    assert identical(params, full(raw["params"], ShellParams))
    assert unstructure(params) == {"cmd": "cp {input} {output}", "env": {"A": "1"}}


def test_types_it_does_not_know_are_left_to_cattrs() -> None:
    @attrs.define
    class Odd:
        pair: tuple[int, int] = (0, 0)
        tags: frozenset[str] = frozenset()
        mode: typing.Literal["a", "b"] = "a"

    @attrs.define
    class Converted:
        n: int = attrs.field(default=0, converter=int)

    with C._structure_lock:
        assert structure({"pair": [1, 2]}, Odd) is NOT_EXACT
        assert structure({"n": 1}, Converted) is NOT_EXACT
    assert unstructure(Odd()) is NOT_EXACT
    assert unstructure(Converted()) is NOT_EXACT


def test_a_first_run_of_a_plain_pipeline_does_not_import_cattrs(project: Project) -> None:
    """A full load of usual values builds them without cattrs (whose import
    alone is several milliseconds of every first run)."""
    project.write("a.txt", "a\n")
    project.pipeline(
        [
            {
                "name": "sh",
                "uses": "shell",
                "inputs": ["a.txt"],
                "outputs": ["a.out"],
                "params": {"cmd": "tr a-z A-Z < {input} > {output}", "env": {"X": "1"}},
                "retry": {"attempts": 2, "backoff": 0.5},
                "timeout": 30.0,
            }
        ]
    )
    probe = (
        "import json, sys, pipekit.cli; rc = pipekit.cli.main(['run', '--json']); "
        "sys.stderr.write(json.dumps('cattrs' in sys.modules) + '\\n'); sys.exit(rc)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=project.root,
        env=project.env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "false", proc.stderr
    assert project.read("a.out") == "A\n"
