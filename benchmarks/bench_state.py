"""Durable PipelineState transactions per second on a ~10 KB state, against
the floor of writing the same bytes durably by hand.

floor:   temp file + write + fsync + rename + fsync of the folder, per write
         (the least a durable replace of a file costs on this machine)
pipekit: ``with state.transaction() as tx: tx.data["counter"] += 1``: lock,
         read and parse, serialize, back up (a hard link) or not, temp file +
         fsync + rename, folder fsync(s), log line + fdatasync, unlock

The modes run interleaved, round after round, in one process, so that a busy
machine slows them alike; the figure per mode is the median of the rounds.

    python benchmarks/bench_state.py                   # 5 rounds x 300 transactions
    python benchmarks/bench_state.py --rounds 9 --transactions 1000 --json-out out.json
"""

from __future__ import annotations

import argparse
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
from typing import Any

import attrs

ROOT = Path(__file__).resolve().parent


@attrs.define
class Item:
    name: str
    size: int
    tags: list[str]


@attrs.define
class Doc:
    counter: int
    items: list[Item]


def make_state(target_bytes: int) -> dict[str, Any]:
    """A state of about ``target_bytes`` once serialized."""
    from pipekit.state._pipeline_state import encode

    data: dict[str, Any] = {"counter": 0, "items": []}
    i = 0
    while len(encode(data)) < target_bytes:
        data["items"].append({"name": f"item-{i:05d}", "size": i * 37, "tags": ["a", "bb"]})
        i += 1
    return data


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def floor(folder: Path, payload: bytes, n: int) -> float:
    """Seconds per durable replace of ``payload``: temp + fsync + rename + dir fsync."""
    final = folder / "floor.json"
    tmp = folder / ".floor.json.tmp"
    t0 = time.perf_counter()
    for _ in range(n):
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            view = memoryview(payload)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, final)
        fsync_dir(folder)
    return (time.perf_counter() - t0) / n


def transactions(state: Any, n: int) -> float:
    """Seconds per read-modify-write transaction."""
    t0 = time.perf_counter()
    for _ in range(n):
        with state.transaction() as tx:
            tx.data["counter"] += 1
    return (time.perf_counter() - t0) / n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default: 5)")
    ap.add_argument("--transactions", type=int, default=300, help="per mode per round (default: 300)")
    ap.add_argument("--size", type=int, default=10_000, help="state size in bytes (default: 10000)")
    ap.add_argument("--dir", type=Path, default=None,
                    help="where to write (default: a temp folder under benchmarks/.work)")
    ap.add_argument("--json-out", type=Path, default=None, help="also write the figures as JSON")
    args = ap.parse_args()

    from pipekit.state._pipeline_state import PipelineState, encode

    base = args.dir or ROOT / ".work"
    base.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-state-", dir=base))
    data = make_state(args.size)
    payload = encode(data)

    def fresh(name: str, **kw: Any) -> Any:
        folder = work / name
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir()
        state = PipelineState(folder / "state.json", **kw)
        state.write(data)
        return state

    modes: dict[str, Callable[[int], float]] = {
        "floor (temp+fsync+rename+dir fsync)": lambda n: floor(work, payload, n),
        "pipekit, backups on (50)": lambda n: transactions(fresh("on"), n),
        "pipekit, backups off": lambda n: transactions(fresh("off", backup_before_write=False), n),
        "pipekit, backups on + attrs schema": lambda n: transactions(fresh("schema", schema=Doc), n),
    }
    print(f"state: {len(payload)} bytes; {args.rounds} rounds x {args.transactions} per mode; "
          f"folder {work}", flush=True)
    for fn in modes.values():  # warm-up: imports, page cache, first backups
        fn(20)
    per_tx: dict[str, list[float]] = {m: [] for m in modes}
    for r in range(args.rounds):
        for mode, fn in modes.items():
            per_tx[mode].append(fn(args.transactions))
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        print(f"  round {r + 1}: " + ", ".join(
            f"{m.split(',')[0] if m.startswith('floor') else m}: {1 / per_tx[m][-1]:.0f}/s"
            for m in modes) + f"  (load {load:.1f})", flush=True)

    floor_name = next(iter(modes))
    floor_s = statistics.median(per_tx[floor_name])
    rows = []
    print()
    print(f"{'mode':<38} {'tx/s':>8} {'ms/tx':>8} {'x floor':>8}")
    print("-" * 66)
    for mode in modes:
        s = statistics.median(per_tx[mode])
        ratio = s / floor_s
        rows.append({"mode": mode, "per_s": round(1 / s, 1), "ms": round(s * 1e3, 3),
                     "x_floor": round(ratio, 2),
                     "rounds_ms": [round(x * 1e3, 3) for x in per_tx[mode]]})
        print(f"{mode:<38} {1 / s:>8.0f} {s * 1e3:>8.3f} {ratio:>7.2f}x")
    checked = [r for r in rows if r["mode"] in ("pipekit, backups on (50)", "pipekit, backups off")]
    ok = all(r["x_floor"] <= 2.0 and r["per_s"] >= 100 for r in checked)
    print()
    print(f"target (backups on and off): within 2x of the floor and >= 100/s: {'met' if ok else 'NOT met'}")
    if args.json_out:
        args.json_out.write_text(json.dumps({
            "python": sys.version.split()[0],
            "machine": f"{os.cpu_count()} CPUs, {platform.platform()}",
            "state_bytes": len(payload),
            "rounds": args.rounds,
            "transactions": args.transactions,
            "folder": str(work),
            "results": rows,
            "target_met": ok,
        }, indent=2) + "\n")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
