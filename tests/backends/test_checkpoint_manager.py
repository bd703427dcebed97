"""CheckpointManager over every checkpoint store (the ``checkpoint_store``
fixture): save/load, deltas, ids, list/info/stats, delete, retention,
orphans, format versions."""

from __future__ import annotations

import datetime as dt
import logging
import struct
import zlib
from typing import Any

import attrs
import orjson
import pytest
from pipekit import (
    CheckpointConfigError,
    CheckpointCorrupted,
    CheckpointInfo,
    CheckpointManager,
    CheckpointNotFound,
    CheckpointStateError,
    CheckpointVersionError,
    PipekitError,
    Retention,
)
from pipekit.checkpoints import retention as retention_mod
from pipekit.checkpoints.index import INDEX_ID, blob_number
from pipekit.errors import EXIT_USAGE

pytest_plugins = ["checkpoint_conformance"]  # the checkpoint_store fixture, over every store

NS = "pipe.stage"


def big_state(n: int = 2000) -> dict[str, Any]:
    """About 100 KB of JSON: above the delta threshold size."""
    return {
        f"k{i:05d}": {"id": i, "name": f"item-{i}", "tags": ["a", "b"], "nested": {"x": i % 7}}
        for i in range(n)
    }


def blobs(store: Any) -> list[str]:
    return [s for s in store.list(NS) if blob_number(s) is not None]


def manager(store: Any, **kw: Any) -> CheckpointManager:
    return CheckpointManager(store, NS, **kw)


# -- save and load -------------------------------------------------------------


def test_roundtrip_and_info(checkpoint_store: Any) -> None:
    m = manager(checkpoint_store)
    state = {"a": [1, 2.5, None, True, "x"], "b": {"c": {"d": []}}, "é": "ünïcode"}
    info = m.save(state, metadata={"epoch": 3, "note": "first"})
    assert isinstance(info, CheckpointInfo)
    assert (info.id, info.seq, info.kind, info.codec, info.base, info.chain) == (
        "00000001",
        1,
        "full",
        "json",
        None,
        0,
    )
    assert info.size == len(orjson.dumps(state))
    assert len(info.sha256) == 64 and not info.encrypted
    assert info.keys == ("a", "b", "é") and info.n_keys == 3
    assert info.metadata == {"epoch": 3, "note": "first"}
    assert manager(checkpoint_store).load() == state
    assert m.info(info.id) == manager(checkpoint_store).info("latest")


def test_compression_is_recorded_and_skipped_when_it_does_not_help(checkpoint_store: Any) -> None:
    m = manager(checkpoint_store, level=5)
    info = m.save({"text": "abc" * 10_000})
    assert (info.compression, info.level, info.compressed) == ("zstd", 5, True)
    assert info.stored_size < info.size / 10
    tiny = m.save(b"\x00\x01")
    assert tiny.compression is None and not tiny.compressed
    plain = manager(checkpoint_store, compression=None).save({"text": "abc" * 10_000})
    assert plain.compression is None and plain.stored_size > plain.size
    assert manager(checkpoint_store).load(info.id) == {"text": "abc" * 10_000}
    assert manager(checkpoint_store).load(tiny.id) == b"\x00\x01"


def test_bytes_are_stored_as_they_are(checkpoint_store: Any) -> None:
    m = manager(checkpoint_store, delta_min_size=0)
    data = bytes(range(256)) * 1000
    first = m.save(data)
    second = m.save(data + b"!")
    assert (first.codec, second.codec, second.kind) == ("bytes", "bytes", "full")
    assert m.load(first.id) == data
    assert manager(checkpoint_store).load() == data + b"!"


@attrs.define
class Item:
    name: str
    when: dt.datetime


@attrs.define
class Progress:
    offset: int
    items: list[Item]
    extra: dict[str, int] = attrs.Factory(dict)


def test_attrs_states_are_unstructured_and_structured_back(checkpoint_store: Any) -> None:
    when = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    state = Progress(10, [Item("a", when)], {"x": 1})
    info = manager(checkpoint_store).save(state)
    assert info.type == f"{__name__}.Progress"
    raw = manager(checkpoint_store).load()
    assert raw == {
        "offset": 10,
        "items": [{"name": "a", "when": when.isoformat()}],
        "extra": {"x": 1},
    }
    assert manager(checkpoint_store).load(type=Progress) == state
    assert manager(checkpoint_store, state_type=Progress).load() == state
    nested = {"p": Progress(1, [])}
    manager(checkpoint_store).save(nested)
    assert manager(checkpoint_store).load(type=dict[str, Progress]) == nested


@pytest.mark.parametrize(
    "state",
    [{"s": {1, 2}}, {1: "int key"}, {"o": object()}, {"deep": [{"x": {2: 3}}]}],
    ids=["set", "int-key", "object", "nested-int-key"],
)
def test_states_that_are_not_json_shaped_are_refused_and_nothing_is_stored(
    checkpoint_store: Any, state: Any
) -> None:
    m = manager(checkpoint_store)
    with pytest.raises(CheckpointStateError, match=r"JSON-shaped|str"):
        m.save(state)
    assert checkpoint_store.list(NS) == []
    with pytest.raises(CheckpointStateError):
        m.save({"ok": 1}, metadata={"bad": {1, 2}})
    assert checkpoint_store.list(NS) == []


def test_a_non_str_key_is_refused_on_the_delta_path_too(checkpoint_store: Any) -> None:
    m = manager(checkpoint_store, delta_min_size=0)
    state = big_state(50)
    m.save(state)
    state["k00001"] = {7: "x"}
    with pytest.raises(CheckpointStateError):
        m.save(state)
    state["k00001"] = "fine"
    state[8] = "x"  # type: ignore[index]
    with pytest.raises(CheckpointStateError, match="must be str"):
        m.save(state)
    del state[8]  # type: ignore[arg-type]

    class Ambiguous:  # like an array: comparing it raises
        def __eq__(self, other: object) -> bool:
            raise ValueError("truth value is ambiguous")

        __ne__ = __eq__  # type: ignore[assignment]
        __hash__ = None  # type: ignore[assignment]

    state["k00002"] = Ambiguous()
    with pytest.raises(CheckpointStateError, match="Ambiguous"):
        m.save(state)
    assert len(m.list()) == 1


# -- deltas ------------------------------------------------------------------------


def test_a_small_change_to_a_large_state_is_stored_as_a_small_delta(checkpoint_store: Any) -> None:
    m = manager(checkpoint_store)
    state = big_state()
    full = m.save(state)
    for i in range(0, 2000, 100):  # 1% of the items
        state[f"k{i:05d}"]["nested"]["x"] = -i
    del state["k00003"]
    state["added"] = {"deep": [1, 2]}
    d = m.save(state)
    assert (full.kind, d.kind, d.base, d.base_seq, d.chain) == ("full", "delta", full.id, 1, 1)
    assert d.stored_size < full.stored_size / 5
    assert d.full_size == full.size
    assert manager(checkpoint_store).load() == state
    assert manager(checkpoint_store).load(full.id) == big_state()


def test_in_place_mutation_of_the_saved_object_is_seen(checkpoint_store: Any) -> None:
    """The manager diffs against its own copy, not the caller's object."""
    m = manager(checkpoint_store)
    state = big_state()
    m.save(state)
    expected = []
    for step in range(4):
        state["k00010"]["tags"].append(f"t{step}")
        if step == 0:
            state["k00011"]["nested"] = {"y": [step]}  # a new object, stored by a delta...
        else:
            state["k00011"]["nested"]["y"].append(step)  # ...then changed in place
        state.pop(f"k{100 + step:05d}")
        info = m.save(state)
        assert info.kind == "delta"
        expected.append((info.id, orjson.loads(orjson.dumps(state))))
    fresh = manager(checkpoint_store)
    for id, want in expected:
        assert fresh.load(id) == want


def test_lists_are_diffed_by_index_with_appends_and_truncations(checkpoint_store: Any) -> None:
    m = manager(checkpoint_store, delta_min_size=0)
    state: dict[str, Any] = {"log": [{"n": i} for i in range(3000)], "tail": list(range(50))}
    m.save(state)
    state["log"].extend({"n": -i} for i in range(5))
    state["log"][7]["n"] = "changed"
    del state["tail"][10:]
    info = m.save(state)
    assert info.kind == "delta" and info.size < 300
    assert manager(checkpoint_store).load() == state


def test_root_replacements_and_type_changes(checkpoint_store: Any) -> None:
    m = manager(checkpoint_store, delta_min_size=0, delta_threshold=1.0)
    states: list[Any] = [
        {"a": {"b": 1}},
        {"a": [1]},
        {"a": "x"},
        [1, 2],
        [1, 2, 3],
        "text",
        None,
        {"a": 1.0},
        {"a": 1.5},
        {"a": False},
    ]
    ids = [m.save(s).id for s in states]
    fresh = manager(checkpoint_store)
    for id, s in zip(ids, states):
        assert fresh.load(id) == s
        assert orjson.dumps(fresh.load(id)) == orjson.dumps(s)  # 1.0 stays a float, False a bool


def test_a_leaf_changing_type_only_is_recorded_in_large_containers_too(
    checkpoint_store: Any,
) -> None:
    """Dicts and lists longer than the bulk threshold are diffed by C-level
    passes; those compare types as well as values."""
    m = manager(checkpoint_store, delta_min_size=0)
    state: dict[str, Any] = {f"k{i}": 1 for i in range(100)}
    m.save(state)
    state["k5"] = True
    state["k6"] = 1.0
    assert m.save(state).kind == "delta"
    got = manager(checkpoint_store).load()
    assert (type(got["k5"]), type(got["k6"])) == (bool, float)
    assert orjson.dumps(got) == orjson.dumps(state)
    m2 = CheckpointManager(checkpoint_store, "list.ns", delta_min_size=0)
    items: list[Any] = [0] * 100
    m2.save(items)
    items[7] = False
    assert m2.save(items).kind == "delta"
    assert type(CheckpointManager(checkpoint_store, "list.ns").load()[7]) is bool


def test_deltas_fall_back_to_full_when_they_do_not_pay(checkpoint_store: Any) -> None:
    m = manager(checkpoint_store)
    state = big_state()
    m.save(state)
    changed = {k: {"other": True} for k in state}  # every value replaced
    assert m.save(changed).kind == "full"
    assert m.save(changed, full=True).kind == "full"
    m2 = CheckpointManager(checkpoint_store, "small.ns")
    m2.save({"offset": 1})
    assert m2.save({"offset": 2}).kind == "full"  # below delta_min_size
    assert manager(checkpoint_store, deltas=False).save(changed).kind == "full"


def test_chains_are_capped_at_max_chain(checkpoint_store: Any) -> None:
    m = manager(checkpoint_store, max_chain=3)
    state = big_state(500)
    kinds = []
    for i in range(9):
        state["k00001"]["id"] = i
        kinds.append((m.save(state).kind, m.latest().chain))  # type: ignore[union-attr]
    assert kinds == [
        ("full", 0),
        ("delta", 1),
        ("delta", 2),
        ("delta", 3),
        ("full", 0),
        ("delta", 1),
        ("delta", 2),
        ("delta", 3),
        ("full", 0),
    ]
    assert manager(checkpoint_store).load() == state


def test_full_saves_keep_the_managers_copy_current_without_a_reparse(
    checkpoint_store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a full save (chain at max_chain, or full=True) the next delta
    diffs against the copy the manager kept up to date, not a re-parse."""
    from pipekit.checkpoints import manager as manager_mod

    parses = []
    real = manager_mod._materialize
    monkeypatch.setattr(manager_mod, "_materialize", lambda p: parses.append(1) or real(p))
    m = manager(checkpoint_store, max_chain=2)
    state = big_state(500)
    kinds = []
    for i in range(8):
        state["k00001"]["id"] = i
        kinds.append(m.save(state, full=i == 5).kind)
    assert kinds == ["full", "delta", "delta", "full", "delta", "full", "delta", "delta"]
    assert len(parses) == 1  # once, after the first save of all
    fresh = manager(checkpoint_store)
    for e in m.list():
        assert fresh.load(e.id)["k00001"]["id"] == int(e.id) - 1


def test_a_new_manager_continues_the_chain_after_load_or_without_it(checkpoint_store: Any) -> None:
    state = big_state(500)
    manager(checkpoint_store).save(state)
    m = manager(checkpoint_store)
    state["k00002"]["id"] = "x"
    assert m.save(state).kind == "delta"  # base rebuilt from the store
    m = manager(checkpoint_store)
    loaded = m.load()
    loaded["k00003"]["id"] = "y"  # the caller's copy: the manager's is its own
    assert m.save(loaded).kind == "delta"
    assert manager(checkpoint_store).load() == loaded


# -- ids, list, info, stats ---------------------------------------------------------


def test_ids_are_checked(checkpoint_store: Any) -> None:
    m = manager(checkpoint_store)
    for bad in ("", "latest", "a/b", "-x", "x" * 129, "sp ace"):
        with pytest.raises(CheckpointConfigError):
            m.save({}, id=bad)
    assert m.save({}, id="epoch-1.a:b_c").id == "epoch-1.a:b_c"


def test_saving_an_id_again_replaces_it_and_keeps_the_old_one_hidden_while_needed(
    checkpoint_store: Any,
) -> None:
    m = manager(checkpoint_store)
    state = big_state(500)
    m.save(state, id="x")
    state["k00001"]["id"] = "second"
    second = m.save(state, id="x")
    assert second.kind == "delta"  # against the first "x", now hidden
    assert [e.id for e in m.list()] == ["x"]
    assert [(e.id, e.hidden) for e in m.list(hidden=True)] == [("x", True), ("x", False)]
    assert manager(checkpoint_store).load("x") == state
    assert m.stats().hidden == 1
    third = m.save(state, id="y", full=True)
    m.delete("x")  # the hidden base goes too
    assert [e.id for e in m.list(hidden=True)] == ["y"]
    assert blobs(checkpoint_store) == [third.blob]


def test_list_sorts_and_filters(checkpoint_store: Any) -> None:
    m = manager(checkpoint_store)
    m.save({"v": "x" * 100}, id="b", metadata={"epoch": 1})
    m.save({"v": 1}, id="a", metadata={"epoch": 2, "best": True})
    m.save(b"raw", id="c", metadata={"epoch": 2})
    assert [e.id for e in m.list()] == ["b", "a", "c"]
    assert [e.id for e in m.list(sort="-seq")] == ["c", "a", "b"]
    assert [e.id for e in m.list(sort="id")] == ["a", "b", "c"]
    assert [e.id for e in m.list(sort="-size")] == ["b", "a", "c"]
    assert [e.id for e in m.list(filter={"epoch": 2})] == ["a", "c"]
    assert [e.id for e in m.list(filter={"codec": "bytes"})] == ["c"]
    assert [e.id for e in m.list(filter=lambda e: e.metadata.get("best", False))] == ["a"]
    with pytest.raises(CheckpointConfigError, match="cannot sort"):
        m.list(sort="colour")


def test_info_and_load_of_missing_ids(checkpoint_store: Any) -> None:
    m = manager(checkpoint_store)
    with pytest.raises(CheckpointNotFound, match=r"no checkpoints in 'pipe\.stage'"):
        m.load()
    with pytest.raises(CheckpointNotFound):
        m.info()
    assert m.latest() is None
    m.save({"a": 1})
    with pytest.raises(CheckpointNotFound, match="no checkpoint 'nope'") as exc:
        m.load("nope")
    assert exc.value.exit_code == EXIT_USAGE and isinstance(exc.value, PipekitError)
    with pytest.raises(CheckpointNotFound):
        m.delete("nope")


def test_stats(checkpoint_store: Any) -> None:
    m = manager(checkpoint_store)
    assert m.stats().count == 0 and m.stats().newest is None
    state = big_state(500)
    a = m.save(state)
    state["k00001"]["id"] = 0
    b = m.save(state)
    s = m.stats()
    assert (s.count, s.full, s.delta, s.max_chain, s.hidden) == (2, 1, 1, 1, 0)
    assert s.size == a.size + b.size and s.stored_size == a.stored_size + b.stored_size
    assert s.oldest == a.time and s.newest == b.time
    assert s.to_json()["count"] == 2


# -- delete, retention, garbage -------------------------------------------------------


def test_deleting_a_base_rebases_its_dependents(checkpoint_store: Any) -> None:
    m = manager(checkpoint_store)
    state = big_state(500)
    saved = []
    for i in range(4):
        state["k00001"]["id"] = i
        info = m.save(state)
        saved.append((info.id, orjson.loads(orjson.dumps(state))))
    assert [e.kind for e in m.list()] == ["full", "delta", "delta", "delta"]
    assert m.delete(saved[1][0]) == [saved[1][0]]
    listed = m.list()
    assert [(e.kind, e.chain) for e in listed] == [("full", 0), ("full", 0), ("delta", 1)]
    assert listed[2].base == saved[2][0]
    fresh = manager(checkpoint_store)
    for id, want in [saved[0], *saved[2:]]:
        assert fresh.load(id) == want
    assert sorted(blobs(checkpoint_store)) == sorted(e.blob for e in listed)
    assert fresh.verify().ok


def test_keep_last_on_save_keeps_the_bases_that_kept_deltas_need(checkpoint_store: Any) -> None:
    m = manager(checkpoint_store, retention={"keep_last": 2}, max_chain=4)
    state = big_state(500)
    history = []
    for i in range(12):
        state["k00001"]["id"] = i
        info = m.save(state)
        history.append(info.kind)
        entries = m.list()
        kept_deltas = [e for e in entries if e.kind == "delta"]
        for e in kept_deltas:  # every kept delta can be rebuilt
            assert any(b.seq == e.base_seq for b in entries)
        assert sorted(blobs(checkpoint_store)) == sorted(e.blob for e in entries)
        assert len(entries) <= 2 + 4
    assert manager(checkpoint_store).load() == state
    assert manager(checkpoint_store).verify().ok
    # once a full checkpoint starts a new chain, the old chain goes
    assert history[-2:] == ["full", "delta"]
    assert [e.kind for e in m.list()] == ["full", "delta"]


def test_small_frequent_saves_keep_no_history_and_cost_two_writes(checkpoint_store: Any) -> None:
    """A record-stage-sized state: one blob and one index put per save."""

    class Counting:
        def __init__(self, inner: Any) -> None:
            self.inner, self.puts, self.gets = inner, 0, 0

        def put(self, *a: Any, **kw: Any) -> None:
            self.puts += 1
            self.inner.put(*a, **kw)

        def get(self, *a: Any) -> Any:
            self.gets += 1
            return self.inner.get(*a)

        def list(self, ns: str) -> list[str]:
            return self.inner.list(ns)

        def delete(self, *a: Any) -> None:
            self.inner.delete(*a)

    store = Counting(checkpoint_store)
    m = CheckpointManager(store, NS, retention=Retention(keep_last=1))
    for i in range(200):
        m.save({"offset": i * 4096, "out_len": i * 100, "records": i * 10_000, "failed": 0})
    assert store.puts == 400
    assert store.gets == 200  # the index, re-read (and not re-parsed) per save
    assert len(blobs(checkpoint_store)) == 1 and len(m.list()) == 1
    assert manager(checkpoint_store).load()["offset"] == 199 * 4096


def test_retention_policy_selection() -> None:
    def e(seq: int, t: float, base: int | None = None, hidden: bool = False) -> CheckpointInfo:
        return CheckpointInfo(
            id=f"c{seq}",
            seq=seq,
            time=t,
            kind="delta" if base else "full",
            size=1,
            stored_size=1,
            sha256="0" * 64,
            codec="json",
            compression=None,
            level=None,
            key_id=None,
            base_seq=base,
            base=f"c{base}" if base else None,
            chain=0,
            full_size=1,
            keys=(),
            n_keys=None,
            metadata={},
            type=None,
            blob=f"b-{seq}",
            hidden=hidden,
        )

    day = 86400.0
    now = 100 * day
    entries = [
        e(1, now - 10 * day),
        e(2, now - 9 * day, 1),
        e(3, now - 5 * day),
        e(4, now - 1 * day, 3),
        e(5, now - 0.5 * day, 4),
        e(6, now - 20 * day, hidden=True),
    ]
    doomed = retention_mod.doomed
    assert doomed(entries, Retention(), now) == {6}  # keep all: only the unneeded hidden one
    assert doomed(entries, Retention(keep_last=1), now) == {1, 2, 6}  # 5 needs 4 needs 3
    assert doomed(entries, Retention(keep_last=4), now) == {6}  # 2 needs 1
    assert doomed(entries, Retention(max_age_days=2), now) == {1, 2, 6}
    assert doomed(entries, Retention(max_age_days=9.5), now) == {6}  # 2 is kept, needs 1
    assert doomed(entries, Retention(max_age_days=0), now) == {1, 2, 6}  # newest stays
    assert doomed(entries, Retention(keep_last=3, max_age_days=0.75), now) == {1, 2, 6}
    assert (
        doomed([e(1, 0.0), e(2, 1.0, 1, hidden=True), e(3, 2.0, 2)], Retention(keep_last=1), now)
        == set()
    )  # 3 needs hidden 2, which needs 1: nothing goes
    for bad in ({"keep_last": 0}, {"keep_last": "5"}, {"max_age_days": -1}, {"keep": 1}, 5):
        with pytest.raises(CheckpointConfigError):
            Retention.from_options(bad)


def test_prune_applies_a_policy_and_removes_orphans(checkpoint_store: Any) -> None:
    m = manager(checkpoint_store)
    for i in range(5):
        m.save({"i": i})
    next_blob = "b-0000000099"
    checkpoint_store.put(NS, next_blob, b"a save in flight")  # numbered beyond the index
    checkpoint_store.put(NS, "unrelated", b"not the manager's")
    m.delete("00000002")
    checkpoint_store.put(NS, "b-0000000002", b"left by an interrupted delete")
    assert m.verify().orphans == ["b-0000000002"]
    dry = m.prune({"keep_last": 2}, dry_run=True)
    assert [e.id for e in dry.deleted] == ["00000001", "00000003"] and dry.dry_run
    assert len(m.list()) == 4
    result = m.prune({"keep_last": 2})
    assert [e.id for e in result.deleted] == ["00000001", "00000003"]
    assert result.orphans == ["b-0000000002"]
    assert [e.id for e in m.list()] == ["00000004", "00000005"]
    assert sorted(checkpoint_store.list(NS)) == sorted(
        [INDEX_ID, "b-0000000004", "b-0000000005", next_blob, "unrelated"]
    )
    assert m.prune({"max_age_days": 0}).deleted[0].id == "00000004"
    assert [e.id for e in m.list()] == ["00000005"]


def test_a_save_sweeps_orphans_once_per_manager(checkpoint_store: Any) -> None:
    m = manager(checkpoint_store)
    m.save({"i": 1})
    m.save({"i": 2})
    m.delete("00000001")
    checkpoint_store.put(NS, "b-0000000001", b"orphan")
    manager(checkpoint_store).save({"i": 3})
    assert "b-0000000001" not in checkpoint_store.list(NS)


def test_an_unindexed_blob_with_the_next_number_is_overwritten(checkpoint_store: Any) -> None:
    """What a save killed between its blob and its index leaves behind."""
    m = manager(checkpoint_store)
    m.save({"i": 1})
    checkpoint_store.put(NS, "b-0000000002", b"torn or not, never indexed")
    assert manager(checkpoint_store).load() == {"i": 1}
    info = manager(checkpoint_store).save({"i": 2})
    assert info.blob == "b-0000000002"
    assert manager(checkpoint_store).load() == {"i": 2} and m.verify().ok


def test_clear_removes_the_managers_ids_only(checkpoint_store: Any) -> None:
    m = manager(checkpoint_store)
    m.save({"i": 1})
    m.save({"i": 2})
    checkpoint_store.put(NS, "stage", b"someone else's")
    m.clear()
    assert checkpoint_store.list(NS) == ["stage"]
    assert m.list() == [] and m.latest() is None
    assert m.save({"i": 3}).seq == 1


# -- format versions --------------------------------------------------------------------


def _with_version(blob: bytes, version: int) -> bytes:
    magic, _v, hlen, _crc = struct.unpack_from(">4sBII", blob)
    head = blob[13 : 13 + hlen]
    crc = zlib.crc32(head, zlib.crc32(struct.pack(">BI", version, hlen)))
    return struct.pack(">4sBII", magic, version, hlen, crc) + blob[13:]


def test_a_newer_format_is_refused_clearly(checkpoint_store: Any) -> None:
    m = manager(checkpoint_store)
    info = m.save({"a": 1})
    raw = checkpoint_store.get(NS, info.blob)
    checkpoint_store.put(NS, info.blob, _with_version(raw, 2))
    with pytest.raises(CheckpointVersionError, match="format 2; this pipekit reads format 1") as e:
        manager(checkpoint_store).load(info.id)
    assert "upgrade pipekit" in str(e.value) and e.value.exit_code == EXIT_USAGE
    checkpoint_store.put(NS, info.blob, raw)
    index = checkpoint_store.get(NS, INDEX_ID)
    checkpoint_store.put(NS, INDEX_ID, _with_version(index, 7))
    with pytest.raises(CheckpointVersionError, match=r"index .* format 7"):
        manager(checkpoint_store).list()


def test_a_damaged_latest_falls_back_to_the_newest_that_verifies(
    checkpoint_store: Any, caplog: pytest.LogCaptureFixture
) -> None:
    m = manager(checkpoint_store)
    m.save({"i": 1})
    m.save({"i": 2})
    bad = m.save({"i": 3})
    raw = bytearray(checkpoint_store.get(NS, bad.blob))
    raw[-1] ^= 0x40
    checkpoint_store.put(NS, bad.blob, bytes(raw))
    caplog.set_level(logging.WARNING, "pipekit.checkpoints")
    loaded = manager(checkpoint_store).load_info()
    assert loaded.state == {"i": 2} and loaded.info.id == "00000002"
    assert loaded.skipped and loaded.skipped[0][0] == bad.id
    assert "loaded checkpoint '00000002' instead, the newest that verifies" in caplog.text
    assert "'00000003'" in caplog.text
    with pytest.raises(CheckpointCorrupted, match="checkpoint '00000003'") as exc:
        manager(checkpoint_store).load(bad.id)
    assert exc.value.id == bad.id
    for info in m.list():
        raw = bytearray(checkpoint_store.get(NS, info.blob))
        raw[-1] ^= 0x01
        checkpoint_store.put(NS, info.blob, bytes(raw))
    with pytest.raises(CheckpointCorrupted, match=r"no checkpoint of 'pipe\.stage' verifies"):
        manager(checkpoint_store).load()


def test_a_save_after_a_damaged_base_is_full(checkpoint_store: Any) -> None:
    m = manager(checkpoint_store)
    state = big_state(500)
    info = m.save(state)
    raw = bytearray(checkpoint_store.get(NS, info.blob))
    raw[-3] ^= 0x10
    checkpoint_store.put(NS, info.blob, bytes(raw))
    state["k00001"]["id"] = "x"
    assert manager(checkpoint_store).save(state).kind == "full"
    assert manager(checkpoint_store).load() == state
