"""The file idempotency store: the conformance suite (with hard links, and
with the locked fallback for file systems without them), plus what is
particular to files: layout, damaged records, temp files, processes."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from idem_conformance import *  # noqa: F403
from idem_conformance import MakeStore, past, rec
from pipekit.stores._file_idempotency import FileIdempotencyStore


@pytest.fixture(params=["link", "no-link"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> MakeStore:
    root = tmp_path / "idem"

    def make() -> FileIdempotencyStore:
        store = FileIdempotencyStore(root)
        store._can_link = request.param == "link"
        return store

    return make


def test_records_are_sharded_by_the_hash_of_the_key(tmp_path: Path) -> None:
    store = FileIdempotencyStore(tmp_path)
    store.create(rec("stage/p/s:abc"))
    h = hashlib.sha256(b"stage/p/s:abc").hexdigest()
    path = tmp_path / h[:2] / f"{h}.json"
    assert store.path_for("stage/p/s:abc") == path
    assert json.loads(path.read_bytes())["key"] == "stage/p/s:abc"


@pytest.mark.parametrize("damage", [b"", b"{not json", b'{"key": "op:k1"}', b"[1, 2]"])
def test_a_damaged_record_reads_as_absent_and_is_replaced(tmp_path: Path, damage: bytes) -> None:
    store = FileIdempotencyStore(tmp_path)
    path = store.path_for("op:k1")
    path.parent.mkdir(parents=True)
    path.write_bytes(damage)
    assert store.get("op:k1") is None
    assert list(store.keys()) == []
    assert store.replace(rec(), expect_owner="o1") is False
    assert store.create(rec(owner="fresh")) is None
    assert store.get("op:k1").owner == "fresh"


def test_sweep_removes_damaged_records(tmp_path: Path) -> None:
    store = FileIdempotencyStore(tmp_path)
    path = store.path_for("op:k1")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\0\0")
    assert store.sweep() == 1
    assert not path.exists()


def test_no_temp_file_is_left_behind(tmp_path: Path) -> None:
    store = FileIdempotencyStore(tmp_path)
    store.create(rec())
    store.create(rec(owner="loser"))  # refused
    store.replace(rec(status="SUCCESS"), expect_owner="o1")
    store.replace(rec(status="FAILED"), expect_owner="nobody")  # refused
    store.create(rec("op:k2", expires=past()))
    store.create(rec("op:k2"))  # over the expired one
    store.delete("op:k2")
    names = sorted(p.name for p in tmp_path.rglob("*") if p.is_file())
    assert all(n.endswith(".json") or n in (".lock", "generation") for n in names), names


def test_sweep_removes_temp_files_of_dead_writers(tmp_path: Path) -> None:
    store = FileIdempotencyStore(tmp_path)
    store.create(rec())
    final = store.path_for("op:k1")
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    pid = int(dead.stdout)
    from pipekit._atomic import _HOST, TEMP_MARK

    orphan = final.with_name(f".{final.name}{TEMP_MARK}{_HOST}-{pid}-0")
    orphan.write_bytes(b"{}")
    live = final.with_name(f".{final.name}{TEMP_MARK}{_HOST}-{os.getpid()}-999")
    live.write_bytes(b"{}")
    assert store.sweep() == 0
    assert not orphan.exists() and live.exists()


def test_wiping_the_folder_changes_the_generation(tmp_path: Path) -> None:
    root = tmp_path / "idem"
    store = FileIdempotencyStore(root)
    assert store.generation() is None  # nothing there yet: nothing to trust
    store.put_many([rec(expires=None)])
    g0 = store.generation()
    assert g0 is not None
    shutil.rmtree(root)
    assert store.generation() is None
    # (a folder made anew gets a new inode; a test cannot force that, but
    # a wiped store's generation never equals a live one's while it is gone)


def test_records_written_by_an_older_version_still_read(tmp_path: Path) -> None:
    store = FileIdempotencyStore(tmp_path)
    path = store.path_for("stage/p/s:fp")
    path.parent.mkdir(parents=True)
    old = {
        "key": "stage/p/s:fp",
        "status": "SUCCESS",
        "fingerprint": "fp",
        "result": {"outputs": {}},
        "error": None,
        "created": 1.0,
        "expires": None,
        "token": 1,
    }
    path.write_bytes(json.dumps(old).encode())
    got = store.get("stage/p/s:fp")
    assert got is not None and got.status == "SUCCESS" and got.owner is None


RACE = textwrap.dedent(
    """
    import json, sys, time
    from pipekit.stores._file_idempotency import FileIdempotencyStore
    from pipekit.stores import IdemRecord
    root, me, link, start = sys.argv[1], sys.argv[2], sys.argv[3] == "1", float(sys.argv[4])
    store = FileIdempotencyStore(root)
    store._can_link = link
    while time.time() < start:
        time.sleep(0.001)
    out = {"create": [], "replace": []}
    now = time.time()
    for i in range(20):
        r = IdemRecord(key=f"op:c{i}", status="PENDING", fingerprint="f", expires=now + 60, owner=me)
        out["create"].append(store.create(r) is None)
        r = IdemRecord(key=f"op:r{i}", status="SUCCESS", fingerprint="f", expires=now + 60, owner=me)
        out["replace"].append(store.replace(r, expect_owner="claim"))
    print(json.dumps(out))
    """
)


@pytest.mark.parametrize("link", [True, False], ids=["link", "no-link"])
def test_processes_racing_on_keys_have_one_winner_each(tmp_path: Path, link: bool) -> None:
    """Creates over expired records and CAS replaces, from 5 processes at once."""
    root = tmp_path / "idem"
    store = FileIdempotencyStore(root)
    for i in range(20):
        store.put_many([rec(f"op:c{i}", owner="stale", expires=past())])
        store.put_many([rec(f"op:r{i}", owner="claim")])
    script = tmp_path / "race.py"
    script.write_text(RACE)
    start = time.time() + 1.5
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(root), f"p{n}", "1" if link else "0", str(start)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for n in range(5)
    ]
    outs = [json.loads(p.communicate(timeout=60)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    for kind in ("create", "replace"):
        for i in range(20):
            winners = [n for n, out in enumerate(outs) if out[kind][i]]
            assert len(winners) == 1, (kind, i, winners)
            prefix = "c" if kind == "create" else "r"
            assert store.get(f"op:{prefix}{i}").owner == f"p{winners[0]}"


@pytest.mark.parametrize("durable", [True, False])
def test_put_many_remakes_a_shard_removed_behind_its_back(tmp_path: Path, durable: bool) -> None:
    """put_many remembers which shard folders it made (one mkdir per shard,
    not per record); a shard removed since is made again, and no temp file
    is left behind."""
    store = FileIdempotencyStore(tmp_path / "idem")
    store.put_many([rec("k1")], durable=durable)
    shard = store.path_for("k1").parent
    shutil.rmtree(shard)
    store.put_many([rec("k1", result={"n": 2})], durable=durable)
    got = store.get("k1")
    assert got is not None and got.result == {"n": 2}
    assert [p.name for p in shard.iterdir()] == [store.path_for("k1").name]
