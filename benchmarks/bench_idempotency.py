"""Benchmark: the idempotency store's hit and miss paths against the file
system's floor, measured side by side in one run.

floor-write
    One atomic small-file write as a careful program does it: write a temp
    file (O_EXCL), fsync it, rename it over the final name. Distinct final
    names in 256 shard folders, like the store's.
floor-write+dir
    The same plus an fsync of the folder, so that the rename itself survives
    a power loss: what the store does for a SUCCESS or FAILED record.
floor-read
    One open + read of such a file.
miss (manager)
    ``IdempotencyManager.begin`` on a new key (the PENDING claim: temp file +
    hard link, not fsynced) then ``complete`` (temp file + fsync, shard lock,
    re-read, owner check, rename, folder fsync): the whole first call of an
    operation, without running it.
hit (manager)
    ``begin`` on a key whose SUCCESS is stored: one read, parse, checks.
hit/miss (decorator)
    The same through ``@pipekit.idempotent`` on a function returning a small
    dict: key derivation from the arguments, result (un)structuring through
    cattrs and the read-back check included.
miss (manager, durable=False)
    For reference: the store without its fsyncs.

Rounds alternate between the floor and pipekit so that a busy machine slows
both alike; each figure is the median of ``--rounds`` rounds of ``--ops``
operations. Everything is written under ``--work`` (default: a temp folder
on the same file system as the system temp dir; pass a folder to measure
another file system).

Usage (from the repository root, with the pipekit dev environment)::

    python benchmarks/bench_idempotency.py
    python benchmarks/bench_idempotency.py --ops 2000 --rounds 7 --work /var/tmp/idem-bench
    python benchmarks/bench_idempotency.py --json-out results.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

PAYLOAD = json.dumps(
    {
        "key": "bench.op:" + "0" * 64,
        "status": "SUCCESS",
        "fingerprint": "0" * 64,
        "result": {"id": "ch_123", "amount": 250, "currency": "eur"},
        "error": None,
        "created": 1.0,
        "expires": 2.0,
        "token": None,
        "owner": "0123456789abcdef pid 1 on host",
        "updated": 1.0,
        "fence": None,
    }
).encode()


def shard_path(root: Path, name: str) -> Path:
    h = hashlib.sha256(name.encode()).hexdigest()
    return root / h[:2] / f"{h}.json"


def floor_write(root: Path, n: int, tag: str, *, sync_dir: bool = False) -> float:
    paths = [shard_path(root, f"{tag}-{i}") for i in range(n)]
    for p in {p.parent for p in paths}:
        p.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    for i, final in enumerate(paths):
        tmp = f"{final}.tmp-{i}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(fd, PAYLOAD)
        os.fsync(fd)
        os.close(fd)
        os.rename(tmp, final)
        if sync_dir:
            dfd = os.open(final.parent, os.O_RDONLY)
            os.fsync(dfd)
            os.close(dfd)
    return time.perf_counter() - t0


def floor_read(root: Path, n: int, tag: str) -> float:
    paths = [os.fspath(shard_path(root, f"{tag}-{i}")) for i in range(n)]
    t0 = time.perf_counter()
    for p in paths:
        with open(p, "rb") as f:
            f.read()
    return time.perf_counter() - t0


def manager_miss(mgr: object, n: int, tag: str) -> float:
    keys = [f"bench.op:{tag}-{i}" for i in range(n)]
    result = {"id": "ch_123", "amount": 250, "currency": "eur"}
    t0 = time.perf_counter()
    for key in keys:
        claim = mgr.begin(key, "fp")  # type: ignore[attr-defined]
        mgr.complete(claim, result)  # type: ignore[attr-defined]
    return time.perf_counter() - t0


def manager_hit(mgr: object, n: int, tag: str) -> float:
    keys = [f"bench.op:{tag}-{i}" for i in range(n)]
    t0 = time.perf_counter()
    for key in keys:
        status = mgr.begin(key, "fp")  # type: ignore[attr-defined]
        assert status.hit
    return time.perf_counter() - t0


def decorated(store: Path) -> Callable[[str, int], dict[str, object]]:
    import pipekit

    @pipekit.idempotent(store=store, operation="bench.charge")
    def charge(order: str, amount: int) -> dict[str, object]:
        return {"id": f"ch_{order}", "amount": amount, "currency": "eur"}

    return charge


def decorator_calls(fn: Callable[[str, int], object], n: int, tag: str) -> float:
    orders = [f"{tag}-{i}" for i in range(n)]
    t0 = time.perf_counter()
    for order in orders:
        fn(order, 250)
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ops", type=int, default=1000, help="operations per round (default 1000)")
    ap.add_argument("--rounds", type=int, default=5, help="rounds; the median is reported (default 5)")
    ap.add_argument("--work", type=Path, default=None, help="folder to write in (default: a temp folder)")
    ap.add_argument("--json-out", type=Path, default=None, help="also write the figures as JSON")
    args = ap.parse_args()

    from pipekit import IdempotencyManager, __version__
    from pipekit.stores._file_idempotency import FileIdempotencyStore

    work = args.work or Path(tempfile.mkdtemp(prefix="pipekit-idem-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    n = args.ops
    times: dict[str, list[float]] = {}

    def record(name: str, seconds: float) -> None:
        times.setdefault(name, []).append(seconds)

    try:
        # warm-up: imports, converter, first folders
        warm = IdempotencyManager(FileIdempotencyStore(work / "warm"))
        manager_miss(warm, 50, "w")
        manager_hit(warm, 50, "w")
        for r in range(args.rounds):
            tag = f"r{r}"
            floor = work / f"floor-{tag}"
            record("floor-write", floor_write(floor, n, tag))
            record("floor-read", floor_read(floor, n, tag))
            record("floor-write+dir", floor_write(work / f"floord-{tag}", n, tag, sync_dir=True))
            mgr = IdempotencyManager(FileIdempotencyStore(work / f"mgr-{tag}"))
            record("miss (manager)", manager_miss(mgr, n, tag))
            record("hit (manager)", manager_hit(mgr, n, tag))
            fn = decorated(work / f"dec-{tag}")
            record("miss (decorator)", decorator_calls(fn, n, tag))
            record("hit (decorator)", decorator_calls(fn, n, tag))
            fast = IdempotencyManager(FileIdempotencyStore(work / f"nd-{tag}", durable=False))
            record("miss (manager, durable=False)", manager_miss(fast, n, tag))
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)

    rows = []
    med = {name: statistics.median(ts) for name, ts in times.items()}
    refs = {
        "floor-write": None,
        "floor-write+dir": "floor-write",
        "floor-read": None,
        "miss (manager)": "floor-write+dir",
        "hit (manager)": "floor-read",
        "miss (decorator)": "floor-write+dir",
        "hit (decorator)": "floor-read",
        "miss (manager, durable=False)": "floor-write",
    }
    for name, ref in refs.items():
        ops = n / med[name]
        us = med[name] / n * 1e6
        vs = f"{med[name] / med[ref]:.2f}x {ref}" if ref else ""
        rows.append({"path": name, "ops_per_s": round(ops), "us_per_op": round(us, 1), "vs_floor": vs})
    print(f"pipekit-core {__version__}, Python {platform.python_version()}, {platform.platform()}, "
          f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f}")
    print(f"work folder: {work} ({n} ops per round, median of {args.rounds} rounds)\n")
    print(f"{'path':<32} {'ops/s':>9} {'us/op':>9}  time per op vs floor")
    print("-" * 72)
    for row in rows:
        print(f"{row['path']:<32} {row['ops_per_s']:>9} {row['us_per_op']:>9}  {row['vs_floor']}")
    if args.json_out:
        args.json_out.write_text(json.dumps({"ops": n, "rounds": args.rounds, "rows": rows,
                                             "seconds": times}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
