"""The redis backend's operations per second, beside the floor of plain
Redis round trips on the same server.

Starts its own ``redis-server`` on a free port (in ``benchmarks/.work/redis``;
never the one on 6379) and measures, with one client connection over TCP
loopback:

- floor: ``PING``, ``SET key value NX PX``, one Lua call (``EVALSHA`` of
  ``return 1``), ``SET`` + ``DEL`` (what a lock must at least do), ``GET`` of a
  small value, ``SET`` of 1 MiB (what a 1 MB checkpoint must at least send),
  all through redis-py like pipekit; and, when the binary exists,
  ``redis-benchmark -c 1`` (a C client) for PING, SET NX and EVALSHA;
- pipekit: lock acquire+release, idempotency ``get`` hit and miss, a claim
  (``create``), a one-record ``put_many``, a 1 MiB checkpoint ``put`` and ``get``.

Every measurement runs in ``--rounds`` rounds, floor and pipekit interleaved
(the machine is shared), and the median round is reported. "RTT" is the
operation's time divided by the median PING time: the round trips it costs.
"x floor" is the operation's time over its floor's, measured in alternating
blocks within each round (median over rounds). The target: each pipekit
operation within 2x the time of its floor.

    python benchmarks/bench_redis.py                # ~30 s
    python benchmarks/bench_redis.py --quick        # a smoke test
    python benchmarks/bench_redis.py --json-out benchmarks/.work/redis.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent
WORK = ROOT / ".work" / "redis"


FLOORS = {
    "lock acquire+release": "floor: SET NX PX + DEL",
    "idempotency get (hit)": "floor: GET (200 B)",
    "idempotency get (miss)": "floor: GET (200 B)",
    "idempotency create (claim)": "floor: one Lua call",
    "idempotency put_many (1 record)": "floor: one Lua call",
    "checkpoint put (1 MiB)": "floor: SET 1 MiB",
    "checkpoint get (1 MiB)": "floor: GET 1 MiB",
}
"""Each pipekit operation and the plain Redis work it cannot do with less."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(port: int) -> subprocess.Popen[bytes]:
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is not on PATH")
    WORK.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(WORK),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return proc
        except OSError:
            time.sleep(0.02)
    proc.kill()
    sys.exit("redis-server did not start")


def per_op(fn: Callable[[int], None], n: int) -> float:
    """Seconds per operation of ``fn(i)`` over ``n`` calls."""
    t0 = time.perf_counter()
    for i in range(n):
        fn(i)
    return (time.perf_counter() - t0) / n


def redis_benchmark(port: int, n: int) -> dict[str, float]:
    """ops/s of redis-benchmark with one client, no pipelining."""
    binary = shutil.which("redis-benchmark")
    if binary is None:
        return {}
    out = {}
    for label, cmd in (
        ("PING", ["PING"]),
        ("SET NX PX", ["SET", "bench:rb:__rand_int__", "v", "NX", "PX", "60000"]),
        ("EVAL return 1", ["EVAL", "return 1", "0"]),
    ):
        proc = subprocess.run(
            [binary, "-p", str(port), "-c", "1", "-n", str(n), "-r", "100000", "-q", "--csv", *cmd],
            capture_output=True,
            text=True,
        )
        for line in proc.stdout.splitlines():
            parts = [p.strip('"') for p in line.split(",")]
            if len(parts) >= 2 and parts[1].replace(".", "").isdigit():
                out[label] = float(parts[1])
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=3000, help="operations per round (small ones)")
    ap.add_argument("--n-large", type=int, default=60, help="operations per round (1 MiB ones)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="--n 300 --n-large 10 --rounds 2")
    ap.add_argument("--json-out", type=Path, default=WORK / "results.json")
    args = ap.parse_args()
    if args.quick:
        args.n, args.n_large, args.rounds = 300, 10, 2

    import redis
    from pipekit.stores import IdemRecord
    from pipekit_redis.checkpoint import RedisCheckpointStore
    from pipekit_redis.connection import RedisConnection
    from pipekit_redis.idempotency import RedisIdempotencyStore
    from pipekit_redis.lock import RedisLockBackend
    from pipekit_redis.options import parse_options

    port = free_port()
    server = start_server(port)
    try:
        url = f"redis://127.0.0.1:{port}/0"
        raw = redis.Redis.from_url(url)
        conn = RedisConnection(parse_options({"url": url, "prefix": "bench:"}, environ={}))
        conn.connect()
        locks = RedisLockBackend(conn, 30.0)
        store = RedisIdempotencyStore(conn)
        cps = RedisCheckpointStore(conn)
        one_sha = raw.script_load("return 1")
        mib = os.urandom(1 << 20)
        raw.set("bench:raw:small", b"x" * 200)
        hit = IdemRecord(
            "stage/bench/s:" + "ab" * 32,
            "SUCCESS",
            "ab" * 32,
            result={
                "outputs": {"out.txt": "cd" * 32},
                "stage": "s",
                "run_id": "r",
                "by": "run r on h",
            },
            token=1,
            fence="stage/bench/s",
        )
        store.put_many([hit])
        cps.put("bench.cp", "stage", mib)
        run = {"claim": 0}

        def claim(i: int) -> None:
            run["claim"] += 1
            store.create(IdemRecord(f"claim/{run['claim']}", "PENDING", "fp", owner="o"))

        small: dict[str, Callable[[int], None]] = {
            "floor: PING": lambda i: raw.ping(),
            "floor: SET NX PX": lambda i: raw.set(f"bench:nx:{i}", "v", nx=True, px=60000),
            "floor: one Lua call": lambda i: raw.evalsha(one_sha, 0),
            "floor: SET NX PX + DEL": lambda i: (
                raw.set("bench:lockfloor", "v", nx=True, px=60000),
                raw.delete("bench:lockfloor"),
            ),
            "floor: GET (200 B)": lambda i: raw.get("bench:raw:small"),
            "lock acquire+release": lambda i: (
                (lease := locks.lock("stage/bench/lock")).acquire(timeout=0),
                lease.release(),
            ),
            "idempotency get (hit)": lambda i: store.get(hit.key),
            "idempotency get (miss)": lambda i: store.get("stage/bench/absent:00"),
            "idempotency create (claim)": claim,
            "idempotency put_many (1 record)": lambda i: store.put_many([hit], durable=False),
        }
        large: dict[str, Callable[[int], None]] = {
            "floor: SET 1 MiB": lambda i: raw.set("bench:raw:mib", mib),
            "floor: GET 1 MiB": lambda i: raw.get("bench:raw:mib"),
            "checkpoint put (1 MiB)": lambda i: cps.put("bench.cp", "stage", mib),
            "checkpoint get (1 MiB)": lambda i: cps.get("bench.cp", "stage"),
        }
        for fn in (*small.values(), *large.values()):  # warm up
            fn(0)
        samples: dict[str, list[float]] = {k: [] for k in (*small, *large)}
        ratios: dict[str, list[float]] = {k: [] for k in FLOORS}
        everything = {**small, **large}
        for _ in range(args.rounds):
            for name, fn in everything.items():
                n = args.n_large if name in large else args.n
                samples[name].append(per_op(fn, n))
            # Each operation against its floor in alternating blocks, so that
            # the load of a shared machine weighs on both alike.
            for name, floor in FLOORS.items():
                n = args.n_large if name in large else args.n
                blocks = 10
                t_op = t_floor = 0.0
                for _ in range(blocks):
                    t_op += per_op(everything[name], max(1, n // blocks))
                    t_floor += per_op(everything[floor], max(1, n // blocks))
                ratios[name].append(t_op / t_floor)
        rb = redis_benchmark(port, max(args.n, 10000))
    finally:
        server.kill()
        server.wait()

    med = {k: statistics.median(v) for k, v in samples.items()}
    ping = med["floor: PING"]
    rows = []
    print(f"redis-server {port}, redis-py {redis.__version__}, {args.rounds} rounds, median round")
    print(f"{'operation':<34} {'ops/s':>9} {'us/op':>9} {'RTT':>6} {'x floor':>8}")
    for name, t in med.items():
        floor = FLOORS.get(name)
        ratio = statistics.median(ratios[name]) if floor else None
        row = {
            "operation": name,
            "ops_per_s": round(1 / t, 1),
            "us_per_op": round(t * 1e6, 1),
            "round_trips": round(t / ping, 2),
            "floor": floor,
            "x_floor": round(ratio, 2) if ratio else None,
            "within_2x": (ratio <= 2.0) if ratio else None,
        }
        rows.append(row)
        xf = f"{ratio:.2f}" if ratio else ""
        print(f"{name:<34} {1 / t:>9.0f} {t * 1e6:>9.1f} {t / ping:>6.2f} {xf:>8}")
    if rb:
        print(
            "redis-benchmark -c 1 (C client, ops/s): "
            + ", ".join(f"{k} {v:.0f}" for k, v in rb.items())
        )
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(json.dumps({"rows": rows, "redis_benchmark": rb}, indent=2))
    bad = [r["operation"] for r in rows if r["within_2x"] is False]
    print("all pipekit operations within 2x of their floor" if not bad else f"over 2x: {bad}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
