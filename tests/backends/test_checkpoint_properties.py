"""Property: any sequence of saves of nested JSON-shaped states, with deltas
and retention in play, loads back equal: the latest and every checkpoint
still listed, from the saving manager and from a fresh one.

"Equal" is Python's ``==``, which is what deltas promise (see
``pipekit.checkpoints.delta``): a delta does not record a change of key order
only, nor a value changing between equal numbers of different types (``1``,
``1.0``, ``True``) inside an otherwise unchanged container.

The stores live on tmpfs when the machine has one: the same file store code,
without the disk's fsync latency, so that many examples fit in a few seconds.
"""

from __future__ import annotations

import copy
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
from checkpoint_conformance import STORE_FACTORIES
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pipekit import CheckpointManager
from pipekit.checkpoints import delta

NS = "prop.ns"

keys = st.text(alphabet="abcdefgh", min_size=1, max_size=3)
leaves = (
    st.none()
    | st.booleans()
    | st.integers(-(2**62), 2**62)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
json_values = st.recursive(
    leaves,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(keys, children, max_size=5),
    max_leaves=30,
)
states = st.dictionaries(keys, json_values, max_size=8) | json_values


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += paths(v, (*prefix, i))
    return out


@st.composite
def mutated(draw: st.DrawFn, state: Any) -> Any:
    """``state`` changed in place at a few places (as a program changes the
    state it checkpoints), or replaced."""
    if draw(st.integers(0, 9)) == 0:
        return draw(states)
    for _ in range(draw(st.integers(0, 3))):
        candidates = paths(state)
        path = draw(st.sampled_from(candidates))
        if not path:
            continue
        parent = state
        for p in path[:-1]:
            parent = parent[p]
        action = draw(st.sampled_from(["set", "delete", "append", "nest"]))
        if action == "set":
            parent[path[-1]] = draw(json_values)
        elif action == "delete":
            del parent[path[-1]]
        elif action == "append" and isinstance(parent[path[-1]], list):
            parent[path[-1]].extend(draw(st.lists(json_values, max_size=2)))
        elif action == "nest":
            parent[path[-1]] = {"n": parent[path[-1]]}
    if isinstance(state, dict) and draw(st.booleans()):
        state[draw(keys)] = draw(json_values)
    return state


steps = st.lists(
    st.tuples(
        st.sampled_from(["save", "save", "save", "save-id", "full", "reopen", "delete", "prune"]),
        st.integers(0, 3),
    ),
    min_size=1,
    max_size=14,
)


TMP = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


@pytest.mark.parametrize("bulk", [0, 32], ids=["c-level-diff", "python-diff"])
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    first=states,
    plan=steps,
    data=st.data(),
    keep_last=st.none() | st.integers(1, 3),
    max_chain=st.integers(0, 3),
)
def test_any_sequence_of_saves_loads_back_equal(
    bulk: int,
    first: Any,
    plan: list[tuple[str, int]],
    data: st.DataObject,
    keep_last: int | None,
    max_chain: int,
) -> None:
    """``bulk``: containers above this length are diffed with the C-level
    passes (0: all of them), below it by the Python loop."""
    saved = delta._BULK
    delta._BULK = bulk
    try:
        for factory in STORE_FACTORIES.values():
            with tempfile.TemporaryDirectory(dir=TMP) as tmp:
                _run(factory(Path(tmp))(), first, plan, data, keep_last, max_chain)
    finally:
        delta._BULK = saved


def _run(
    store: Any,
    first: Any,
    plan: list[tuple[str, int]],
    data: st.DataObject,
    keep_last: int | None,
    max_chain: int,
) -> None:
    def open_manager() -> CheckpointManager:
        return CheckpointManager(
            store,
            NS,
            delta_min_size=0,
            delta_threshold=1.0,
            max_chain=max_chain,
            retention={"keep_last": keep_last} if keep_last else None,
        )

    m = open_manager()
    model: dict[str, Any] = {}  # id -> the state saved under it (a deep copy)
    state = first
    latest: Any = None
    for action, arg in plan:
        if action in ("save", "save-id", "full"):
            state = data.draw(mutated(state)) if latest is not None else state
            info = m.save(
                state, id=f"n{arg}" if action == "save-id" else None, full=action == "full"
            )
            model[info.id] = copy.deepcopy(state)
            latest = info.id
        elif action == "reopen":
            m = open_manager()
        elif action == "delete" and model:
            victim = sorted(model)[arg % len(model)]
            deleted = m.delete(victim)
            assert victim in deleted
            for gone in deleted:
                model.pop(gone, None)
            if latest in deleted:
                latest = max(model, key=lambda i: m.info(i).seq) if model else None
        elif action == "prune":
            m.prune({"keep_last": arg + 1})
        listed = {e.id for e in m.list()}
        for gone in set(model) - listed:  # retention took it
            del model[gone]
        assert listed == set(model)
        if latest is not None:
            assert m.info().id == latest
            assert _same(m.load(), model[latest])
    fresh = open_manager()
    for id, want in model.items():
        assert _same(fresh.load(id), want), id
    report = fresh.verify()
    assert report.ok and not report.orphans, report


def _same(a: Any, b: Any) -> bool:
    return a == b
