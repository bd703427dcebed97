"""Benchmark: CheckpointManager save and load against the floor of zstd + SHA-256.

The workload is a JSON-shaped state of about ``--size-mb`` MB once serialized
(default 64): a dict of small dicts (``{"id", "name", "score", "tags", "ok",
"count"}``, about 120 bytes each, so 64 MB is some 530,000 items).

Measured in one run of this script, side by side (the machine may be busy;
floor and pipekit share the run):

floor, save
    zstd level ``--level`` compression of the serialized bytes (orjson) plus
    SHA-256 of the same bytes: one thread, and with zstd's worker threads
    (``threads=-1``, what the manager uses for payloads of 1 MiB and more).
floor, load
    SHA-256 plus zstd decompression of those bytes.
pipekit full save / load
    ``manager.save(state, full=True)`` (serialize, compress, hash, encode,
    store) and ``load()`` by a fresh manager (read, verify, decompress, parse
    into Python objects). Parsing is timed apart too (``orjson.loads`` of the
    serialized bytes, with and without the garbage collector paused, as the
    manager pauses it).
pipekit delta save / load (``--change`` = 1% of the items changed)
    A save that finds the change by diffing against the manager's in-memory
    copy of the previous state and stores a delta: "first" right after a full
    save (it parses its own copy of the base first), "steady" once it has one.
    Load rebuilds the full checkpoint plus the delta. Also the stored size of
    the delta as a fraction of the full checkpoint's.
small saves
    A record-stage-sized state (~200 bytes) saved ``--small`` times with
    ``keep_last=1`` on the file store, against two ``atomic_write_bytes`` of
    the same size (the blob and the index).

Stores: an in-memory dict (the manager's own cost) and the file store in
``--dir`` (default ``benchmarks/.work/checkpoints``; fsync included). MB/s are
of the serialized state size. Each figure is the median, and the best, of
``--repeat`` runs (default 5): on a busy machine the best is the closer to
what the code costs.

Usage (from the repository root, with the pipekit dev environment)::

    python benchmarks/bench_checkpoints.py                 # 64 MB, 5 repeats
    python benchmarks/bench_checkpoints.py --size-mb 8 --repeat 1   # quick look
    python benchmarks/bench_checkpoints.py --encrypt       # + an AES-GCM row
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import zstandard
from pipekit._atomic import atomic_write_bytes
from pipekit.checkpoints import CheckpointManager
from pipekit.stores._file_checkpoint import FileCheckpointStore

ROOT = Path(__file__).resolve().parent
WORK = ROOT / ".work"


class MemoryStore:
    """The byte-store protocol over a dict (no I/O)."""

    def __init__(self) -> None:
        self.data: dict[tuple[str, str], bytes] = {}

    def put(self, namespace: str, id: str, data: bytes, *, fence: Any = None) -> None:
        self.data[(namespace, id)] = bytes(data)

    def get(self, namespace: str, id: str) -> bytes | None:
        return self.data.get((namespace, id))

    def list(self, namespace: str) -> list[str]:
        return sorted(i for ns, i in self.data if ns == namespace)

    def delete(self, namespace: str, id: str) -> None:
        self.data.pop((namespace, id), None)


def make_state(size_mb: float, seed: int = 1) -> dict[str, Any]:
    rng = random.Random(seed)

    def item(i: int) -> dict[str, Any]:
        return {"id": i, "name": f"item-{i}", "score": rng.random(), "tags": ["a", "b"],
                "ok": i % 2 == 0, "count": rng.randint(0, 10**6)}

    sample = len(orjson.dumps({f"k{i:07d}": item(i) for i in range(1000)})) / 1000
    n = int(size_mb * 1e6 / sample)
    return {f"k{i:07d}": item(i) for i in range(n)}


def change(state: dict[str, Any], fraction: float, step: int) -> int:
    keys = list(state)
    every = max(1, int(1 / fraction))
    n = 0
    for k in keys[step % every :: every]:
        state[k]["count"] = -step - 1
        state[k]["tags"].append(f"s{step}")
        n += 1
    return n


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mb", type=float, default=64.0)
    ap.add_argument("--change", type=float, default=0.01, help="fraction of items changed")
    ap.add_argument("--level", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--small", type=int, default=500, help="number of small saves")
    ap.add_argument("--encrypt", action="store_true", help="add a full save/load with AES-GCM")
    ap.add_argument("--dir", type=Path, default=WORK / "checkpoints")
    ap.add_argument("--json-out", type=Path, default=WORK / "checkpoints.json")
    args = ap.parse_args()

    print(f"building a {args.size_mb:g} MB state ...", file=sys.stderr)
    state = make_state(args.size_mb)
    raw = orjson.dumps(state)
    mb = len(raw) / 1e6
    results: dict[str, Any] = {
        "settings": {**{k: str(v) for k, v in vars(args).items()}, "items": len(state),
                     "serialized_mb": round(mb, 2), "python": sys.version.split()[0],
                     "machine": platform.machine(), "cpus": os.cpu_count(),
                     "zstandard": zstandard.__version__, "orjson": orjson.__version__,
                     "loadavg": os.getloadavg()},
        "rows": {},
    }
    rows: dict[str, dict[str, Any]] = results["rows"]

    def record(name: str, seconds: list[float]) -> None:
        rows[name] = {"median": median(seconds), "min": min(seconds), "all": seconds}
        print(f"  {name:<48} {median(seconds) * 1000:9.1f} ms  {mb / median(seconds):8.1f} MB/s"
              f"  (best {min(seconds) * 1000:.1f} ms)", file=sys.stderr)

    # -- floor ------------------------------------------------------------------
    c1 = zstandard.ZstdCompressor(level=args.level)
    cmt = zstandard.ZstdCompressor(level=args.level, threads=-1)
    comp = c1.compress(raw)
    record("floor save: zstd + sha256 (1 thread)",
           [timed(lambda: (c1.compress(raw), hashlib.sha256(raw).digest()))[0]
            for _ in range(args.repeat)])
    record("floor save: zstd + sha256 (zstd threads)",
           [timed(lambda: (cmt.compress(raw), hashlib.sha256(raw).digest()))[0]
            for _ in range(args.repeat)])
    d = zstandard.ZstdDecompressor()
    record("floor load: sha256 + unzstd",
           [timed(lambda: (hashlib.sha256(raw).digest(), d.decompress(comp)))[0]
            for _ in range(args.repeat)])
    record("orjson.dumps (part of every full save)",
           [timed(lambda: orjson.dumps(state))[0] for _ in range(args.repeat)])

    def parse_gc_on() -> Any:
        return orjson.loads(raw)

    def parse_gc_off() -> Any:
        gc.disable()
        try:
            return orjson.loads(raw)
        finally:
            gc.enable()

    record("orjson.loads, gc on", [timed(parse_gc_on)[0] for _ in range(args.repeat)])
    record("orjson.loads, gc paused (part of every load)",
           [timed(parse_gc_off)[0] for _ in range(args.repeat)])
    results["compressed_fraction"] = len(comp) / len(raw)

    # -- pipekit ------------------------------------------------------------------
    warm = MemoryStore()  # imports and compressor set-up, outside the timings
    wm = CheckpointManager(warm, "warm", level=args.level)
    wm.save(make_state(2))
    CheckpointManager(warm, "warm").load()
    del wm, warm
    stores: dict[str, Callable[[], Any]] = {"memory": MemoryStore}
    args.dir.mkdir(parents=True, exist_ok=True)
    file_root = Path(tempfile.mkdtemp(dir=args.dir))
    stores["file"] = lambda: FileCheckpointStore(file_root)
    fractions = []
    try:
        for sname, make in stores.items():
            store = make()
            print(f"{sname} store:", file=sys.stderr)
            saves, loads, first_d, steady_d, dloads = [], [], [], [], []
            for r in range(args.repeat):
                ns = f"bench.{sname}.{r}"
                m = CheckpointManager(store, ns, level=args.level)
                t, full = timed(lambda m=m: m.save(state, full=True))
                saves.append(t)
                t, _ = timed(lambda ns=ns, store=store: CheckpointManager(store, ns).load())
                loads.append(t)
                change(state, args.change, 2 * r)
                t, d1 = timed(lambda m=m: m.save(state))
                assert d1.kind == "delta", d1
                first_d.append(t)
                change(state, args.change, 2 * r + 1)
                t, d2 = timed(lambda m=m: m.save(state))
                assert d2.kind == "delta", d2
                steady_d.append(t)
                fractions.append(d1.stored_size / full.stored_size)
                t, _ = timed(lambda ns=ns, store=store: CheckpointManager(store, ns).load())
                dloads.append(t)
                del m
                for sid in store.list(ns):
                    store.delete(ns, sid)
                gc.collect()
            record(f"pipekit full save ({sname})", saves)
            record(f"pipekit full load ({sname})", loads)
            record(f"pipekit delta save, first after full ({sname})", first_d)
            record(f"pipekit delta save, steady ({sname})", steady_d)
            record(f"pipekit load through 2 deltas ({sname})", dloads)
        results["delta_stored_fraction"] = median(fractions)
        print(f"  delta stored size / full stored size: {median(fractions):.6f} "
              f"({median(fractions) * 100:.4f}%)", file=sys.stderr)

        if args.encrypt:
            key = Path(file_root) / "key"
            key.write_bytes(os.urandom(32))
            store = MemoryStore()
            enc = {"key_file": str(key)}
            m = CheckpointManager(store, "enc", encryption=enc, level=args.level)
            record("pipekit full save, AES-GCM (memory)",
                   [timed(lambda: m.save(state, full=True))[0] for _ in range(args.repeat)])
            record("pipekit full load, AES-GCM (memory)",
                   [timed(lambda: CheckpointManager(store, "enc", encryption=enc).load())[0]
                    for _ in range(args.repeat)])

        # -- small frequent saves ------------------------------------------------------
        small = {"offset": 123_456_789, "out_len": 98_765_432, "records": 1_000_000,
                 "failed": 3, "stage": "upper", "input": "data/input/sample.txt"}
        fs = FileCheckpointStore(file_root)
        m = CheckpointManager(fs, "small", retention={"keep_last": 1})
        m.save(small)
        t0 = time.perf_counter()
        for _ in range(args.small):
            small["offset"] += 4096
            m.save(small)
        per_save = (time.perf_counter() - t0) / args.small
        blob = fs.get("small", m.latest().blob)  # type: ignore[union-attr]
        index = fs.get("small", "_index")
        assert blob is not None and index is not None
        a, b = file_root / "floor-a", file_root / "floor-b"
        t0 = time.perf_counter()
        for _ in range(args.small):
            atomic_write_bytes(a, blob)
            atomic_write_bytes(b, index)
        floor = (time.perf_counter() - t0) / args.small
        results["small"] = {"state_bytes": len(orjson.dumps(small)), "blob_bytes": len(blob),
                            "index_bytes": len(index), "pipekit_ms": per_save * 1000,
                            "floor_ms": floor * 1000, "blobs_kept": len(fs.list("small")) - 1}
        print(f"small saves: {per_save * 1000:.2f} ms per save (blob {len(blob)} B + index "
              f"{len(index)} B); floor of two atomic writes {floor * 1000:.2f} ms; "
              f"blobs kept: {results['small']['blobs_kept']}", file=sys.stderr)
    finally:
        shutil.rmtree(file_root, ignore_errors=True)

    # -- table -----------------------------------------------------------------------
    print()
    print(f"state: {len(state):,} items, {mb:.1f} MB serialized; zstd level {args.level}; "
          f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f}")
    print()
    print("| measurement | median ms | MB/s | best ms | MB/s |")
    print("|---|---:|---:|---:|---:|")
    for name, r in rows.items():
        med, best = r["median"], r["min"]
        print(f"| {name} | {med * 1000:.0f} | {mb / med:.0f} | {best * 1000:.0f} | {mb / best:.0f} |")
    print()
    print(f"1% delta stored size / full stored size: {results['delta_stored_fraction']:.6f}")
    s = results["small"]
    print(f"small saves (~{s['state_bytes']} B state, keep_last=1, file store): "
          f"{s['pipekit_ms']:.2f} ms per save vs {s['floor_ms']:.2f} ms for two atomic writes")
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
