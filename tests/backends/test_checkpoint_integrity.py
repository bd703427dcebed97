"""Flipping any one byte of any stored blob (a full checkpoint, a delta, the
index) is detected: on load, and by ``verify``."""

from __future__ import annotations

import logging
import struct
from typing import Any

import pytest
from pipekit import CheckpointCorrupted, CheckpointManager
from pipekit.checkpoints.index import INDEX_ID

pytest_plugins = ["checkpoint_conformance"]  # the checkpoint_store fixture, over every store

NS = "pipe.stage"


def state(i: int) -> dict[str, Any]:
    return {f"k{j}": {"v": j, "i": i if j == 3 else 0, "s": "x" * 20} for j in range(12)}


@pytest.fixture
def saved(checkpoint_store: Any) -> dict[str, Any]:
    """A full checkpoint, a delta on it and a second delta (small blobs, so
    that every byte of each can be flipped)."""
    m = CheckpointManager(checkpoint_store, NS, delta_min_size=0)
    infos = [m.save(state(i), metadata={"i": i}) for i in range(3)]
    assert [i.kind for i in infos] == ["full", "delta", "delta"]
    return {"store": checkpoint_store, "infos": infos}


def positions(raw: bytes, header_step: int, payload_step: int = 1) -> list[int]:
    """Every byte of the fixed prefix; every ``header_step``-th byte of the
    JSON header and ``payload_step``-th of the payload (each is covered as a
    whole by one checksum, so sampling them keeps the test quick)."""
    hlen = struct.unpack_from(">I", raw, 5)[0]
    end = 13 + hlen
    return [*range(13), *range(13, end, header_step), *range(end, len(raw), payload_step)]


def flipped(raw: bytes, pos: int) -> bytes:
    b = bytearray(raw)
    b[pos] ^= 0x01 << (pos % 8)
    return bytes(b)


@pytest.mark.parametrize("which", [0, 1, 2], ids=["full", "delta", "second-delta"])
def test_every_byte_flip_of_a_checkpoint_blob_is_detected(
    saved: dict[str, Any], which: int, caplog: pytest.LogCaptureFixture
) -> None:
    store, infos = saved["store"], saved["infos"]
    target = infos[which]
    raw = store.get(NS, target.blob)
    assert 150 < len(raw) < 2000
    caplog.set_level(logging.ERROR, "pipekit.checkpoints")
    for pos in positions(raw, 3):
        store.put(NS, target.blob, flipped(raw, pos))
        m = CheckpointManager(store, NS)
        with pytest.raises(CheckpointCorrupted) as exc:
            m.load(target.id)
        assert exc.value.id == target.id, pos
        assert repr(target.id) in str(exc.value), pos
        report = m.verify()
        assert not report.ok, pos
        bad = {i.id for i in report.damaged}
        assert bad == {i.id for i in infos[which:]}, (pos, bad)  # it and the deltas on it
        assert m.verify(infos[-1].id).damaged  # a delta's verify checks its bases
        if which == 0:  # every checkpoint needs the damaged full one
            with pytest.raises(
                CheckpointCorrupted, match=r"no checkpoint of 'pipe\.stage' verifies"
            ):
                m.load()
        else:  # the latest: the newest that verifies
            loaded = m.load_info()
            assert loaded.info.id == infos[which - 1].id, pos
            assert loaded.state == state(which - 1), pos
            assert [s[0] for s in loaded.skipped] == [i.id for i in reversed(infos[which:])]
    store.put(NS, target.blob, raw)
    m = CheckpointManager(store, NS)
    assert m.verify().ok and m.load() == state(2)


def test_every_byte_flip_of_the_index_is_detected_and_the_index_rebuilt(
    saved: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    store, infos = saved["store"], saved["infos"]
    raw = store.get(NS, INDEX_ID)
    caplog.set_level(logging.ERROR, "pipekit.checkpoints")
    for pos in positions(raw, 7, 13):
        store.put(NS, INDEX_ID, flipped(raw, pos))
        m = CheckpointManager(store, NS)
        assert m.load() == state(2), pos  # rebuilt from the blobs' own headers
        assert [e.id for e in m.list()] == [i.id for i in infos], pos
        report = m.verify()
        assert not report.ok and "index" in (report.index_problem or ""), pos
        assert all(i.ok for i in report.items), pos
    # the next save writes a sound index again
    m = CheckpointManager(store, NS)
    m.save(state(3))
    assert CheckpointManager(store, NS).verify().ok


def test_a_missing_blob_is_reported(saved: dict[str, Any]) -> None:
    store, infos = saved["store"], saved["infos"]
    store.delete(NS, infos[1].blob)
    m = CheckpointManager(store, NS)
    with pytest.raises(CheckpointCorrupted, match="blob b-0000000002 is missing"):
        m.load(infos[1].id)
    with pytest.raises(CheckpointCorrupted, match="delta base '00000002' is damaged"):
        m.load(infos[2].id)
    assert [i.id for i in m.verify().damaged] == [infos[1].id, infos[2].id]
    assert m.load() == state(0)


def test_a_blob_swapped_for_another_valid_blob_is_detected(saved: dict[str, Any]) -> None:
    store, infos = saved["store"], saved["infos"]
    store.put(NS, infos[2].blob, store.get(NS, infos[1].blob))
    with pytest.raises(CheckpointCorrupted, match="header says seq=2, the index says 3"):
        CheckpointManager(store, NS).load(infos[2].id)
