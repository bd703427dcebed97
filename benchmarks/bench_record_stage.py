"""A record stage (`upper`) over 1,000,000 lines against a plain Python loop.

Measured side by side in one run of this script (the machine may be busy:
each figure is the best of --repeat runs, floor and pipekit interleaved):

- floor: ``for line in f: out.write(line.upper())`` in text mode, and the
  same over bytes (``line.upper()`` on bytes), in this process;
- pipekit, in-process: the record loop alone (``run_record_stage`` with the
  file checkpoint store), checkpoints every 10,000 records, and with
  checkpoints off (every 10**12 records or seconds): the difference divided
  by the number of checkpoints is the cost of one checkpoint, also timed
  inside the checkpoint thread (sync of the partial output + put);
- pipekit, end to end: ``pipekit run --force up --json`` as a subprocess
  (start-up, lock, decide, the loop, the commit: fsync + rename of the
  1M-line output, the stage record);
- resume after a kill at 90%: a run is SIGKILLed as soon as its checkpoint
  says 90% of the input is done; the resumed run (a child process that
  prints its own ``/proc/self/io`` at exit) reports how many input bytes it
  read (its own counter) and how many bytes it read in all (``rchar``:
  Python's imports included, and the kept part of the partial output, which
  it reads back to finish the output's hash).

Run from the repository root: ``python benchmarks/bench_record_stage.py``
(``--lines``, ``--repeat``, ``--every``, ``--json-out``). Work files go to
``benchmarks/.work/records/``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "benchmarks" / ".work" / "records"
WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa"]


def make_input(path: Path, lines: int) -> None:
    stamp = path.with_suffix(".n")
    if path.exists() and stamp.exists() and stamp.read_text() == str(lines):
        return
    rng = random.Random(1)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(lines):
            f.write(f"{i:07d} " + " ".join(rng.choice(WORDS) for _ in range(8)) + "\n")
    old = time.time() - 3600
    os.utime(path, (old, old))  # older than the hash cache's racy window
    path.with_suffix(".n").write_text(str(lines))


def floor_text(src: Path, dst: Path) -> float:
    t = time.perf_counter()
    with open(src, encoding="utf-8", newline="") as f, open(
        dst, "w", encoding="utf-8", newline=""
    ) as out:
        for line in f:
            out.write(line.upper())
    return time.perf_counter() - t


def floor_bytes(src: Path, dst: Path) -> float:
    t = time.perf_counter()
    with open(src, "rb") as f, open(dst, "wb") as out:
        for line in f:
            out.write(line.upper())
    return time.perf_counter() - t


def pipekit_in_process(src: Path, work: Path, every: int) -> dict[str, Any]:
    """The record loop alone, with the file checkpoint store."""
    import shutil

    from pipekit.engine._record_checkpoint import RecordCheckpoint
    from pipekit.engine._records import RecordRun, partial_path_for, run_record_stage
    from pipekit.plugins._processors import StageContext
    from pipekit.stores._file_checkpoint import FileCheckpointStore
    from pipekit_stages.records import Upper

    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    store = FileCheckpointStore(work / "checkpoints")
    fp = "b" * 64
    partial = partial_path_for(work / "out.txt", fp)
    ctx = StageContext(
        stage_name="up",
        run_id="bench",
        inputs=[src],
        outputs=[partial],
        params=None,
        log=logging.getLogger("bench"),
        cancelled=threading.Event(),
    )
    run = RecordRun(
        pipeline="bench",
        stage="up",
        fingerprint=fp,
        input_keys=[src.name],
        checkpoint=RecordCheckpoint(store, "bench.up", fp),
        every_records=every,
        every_seconds=1e12,
    )
    t = time.perf_counter()
    info = run_record_stage(Upper(), ctx, run)
    info["seconds"] = time.perf_counter() - t
    return info


def write_project(project: Path, src: Path, every: int) -> None:
    project.mkdir(parents=True, exist_ok=True)
    link = project / "in.txt"
    if not link.exists():
        os.link(src, link)
    (project / "pipekit.toml").write_text(
        "[[stages]]\n"
        'name = "up"\n'
        'uses = "upper"\n'
        'inputs = ["in.txt"]\n'
        'outputs = ["out.txt"]\n'
        f"checkpoint = {{ every_records = {every} }}\n"
    )


def pipekit_cli(project: Path) -> dict[str, Any]:
    t = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "pipekit", "run", "--force", "up", "--json"],
        cwd=project,
        capture_output=True,
        text=True,
        env=dict(os.environ, PIPEKIT_PLAN_CACHE="0"),
    )
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"pipekit run failed: {proc.stderr}")
    summary = json.loads(proc.stdout)
    stage = summary["stages"][0]
    return {"wall_s": wall, "stage_s": stage["duration_s"], "records": stage["records"]}


CHILD = r"""
import sys
from pipekit.cli import main
rc = main(["run", "--json"])
with open("/proc/self/io") as f:
    io = dict(line.split(": ") for line in f.read().splitlines())
sys.stderr.write("RCHAR %s\n" % io["rchar"])
sys.exit(rc)
"""


def resume_after_kill(project: Path, fraction: float) -> dict[str, Any]:
    """Kill a fresh run when its checkpoint passes ``fraction`` of the input;
    resume it and measure what the resumed process read."""
    import shutil

    from pipekit.checkpoints import CheckpointError, CheckpointManager
    from pipekit.engine._record_checkpoint import namespace_for
    from pipekit.stores._file_checkpoint import FileCheckpointStore

    shutil.rmtree(project / ".pipekit", ignore_errors=True)
    for p in project.glob(".out.txt.*"):
        p.unlink()
    (project / "out.txt").unlink(missing_ok=True)
    env = dict(os.environ, PIPEKIT_PLAN_CACHE="0")
    # a first, complete run caches the input's hash, as a real pipeline's
    # earlier runs would; then the output goes, so the stage must run again
    subprocess.run([sys.executable, "-m", "pipekit", "run", "-q"], cwd=project, env=env, check=True)
    (project / "out.txt").unlink()
    store = FileCheckpointStore(project / ".pipekit" / "checkpoints")
    namespace = namespace_for(project.name, "up")
    killed_at = None
    for _ in range(10):  # a run may end before a checkpoint past the point is seen
        proc = subprocess.Popen(
            [sys.executable, "-m", "pipekit", "run", "-q"], cwd=project, env=env
        )
        while proc.poll() is None:
            try:  # the record stage's checkpoint, read as the runner reads it
                st = CheckpointManager(store, namespace, compression=None).load()
            except (OSError, CheckpointError):
                st = None
            if st is not None:
                done = st["done_bytes"] / st["total_bytes"]
                if done >= fraction:
                    proc.send_signal(signal.SIGKILL)
                    killed_at = {"record": st["counters"]["records_in"], "fraction": round(done, 4)}
                    break
            time.sleep(0.0002)
        proc.wait()
        if killed_at is not None:
            break
        (project / "out.txt").unlink(missing_ok=True)
    if killed_at is None:
        raise SystemExit("no run was seen past the kill point")
    t = time.perf_counter()
    child = subprocess.run(
        [sys.executable, "-c", CHILD], cwd=project, env=env, capture_output=True, text=True
    )
    wall = time.perf_counter() - t
    if child.returncode != 0:
        raise SystemExit(f"resumed run failed: {child.stderr}")
    rchar = int(next(x for x in child.stderr.splitlines() if x.startswith("RCHAR")).split()[1])
    records = json.loads(child.stdout)["stages"][0]["records"]
    size = (project / "in.txt").stat().st_size
    return {
        "killed_at": killed_at,
        "input_bytes": size,
        "output_bytes": (project / "out.txt").stat().st_size,
        "resumed_from": records["resumed_from"],
        "resumed_input_bytes_read": records["input_bytes_read"],
        "resumed_rchar": rchar,
        "resumed_wall_s": round(wall, 3),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--every", type=int, default=10_000)
    ap.add_argument("--json-out", type=Path, default=WORK / "results.json")
    args = ap.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    src = WORK / "in.txt"
    make_input(src, args.lines)
    size = src.stat().st_size
    best: dict[str, float] = {}
    checkpoints: dict[str, Any] = {}

    def keep(name: str, seconds: float) -> None:
        best[name] = min(best.get(name, float("inf")), seconds)

    for _ in range(args.repeat):
        keep("floor_text", floor_text(src, WORK / "floor.txt"))
        keep("floor_bytes", floor_bytes(src, WORK / "floor.txt"))
        info = pipekit_in_process(src, WORK / "loop", args.every)
        keep("pipekit_loop", info["seconds"])
        checkpoints = {"saved": info["checkpoints"], "ms_each_in_thread": info.get("checkpoint_ms")}
        info = pipekit_in_process(src, WORK / "loop", 10**12)
        keep("pipekit_loop_no_checkpoints", info["seconds"])
    expected = (WORK / "floor.txt").read_bytes()
    assert (WORK / "loop" / "out.txt").exists() is False  # the partial is never renamed here
    partial = next((WORK / "loop").glob(".out.txt.pipekit-partial-*"))
    assert partial.read_bytes() == expected, "pipekit's output differs from the floor's"

    project = WORK / "project"
    write_project(project, src, args.every)
    cli: dict[str, Any] = {}
    for _ in range(args.repeat):
        r = pipekit_cli(project)
        if not cli or r["wall_s"] < cli["wall_s"]:
            cli = r
    assert (project / "out.txt").read_bytes() == expected
    resume = resume_after_kill(project, 0.9)
    assert (project / "out.txt").read_bytes() == expected

    loop = best["pipekit_loop"]
    per_ckpt = (loop - best["pipekit_loop_no_checkpoints"]) / max(1, checkpoints["saved"] or 1)
    results = {
        "lines": args.lines,
        "input_bytes": size,
        "every_records": args.every,
        "best_of": args.repeat,
        "seconds": {k: round(v, 4) for k, v in best.items()},
        "records_per_s": {k: round(args.lines / v) for k, v in best.items()},
        "ratio_loop_vs_floor_text": round(best["floor_text"] / loop, 3),
        "ratio_loop_vs_floor_bytes": round(best["floor_bytes"] / loop, 3),
        "checkpoints": checkpoints,
        "checkpoint_cost_ms_wall_each": round(per_ckpt * 1000, 3),
        "cli": {
            "wall_s": round(cli["wall_s"], 4),
            "stage_s": cli["stage_s"],
            "ratio_stage_vs_floor_text": round(best["floor_text"] / cli["stage_s"], 3),
            "ratio_wall_vs_floor_text": round(best["floor_text"] / cli["wall_s"], 3),
        },
        "resume_after_kill_at_90pct": resume,
        "load_average": os.getloadavg(),
    }
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(json.dumps(results, indent=2))
    s = results["seconds"]
    print(f"{args.lines:,} lines, {size / 1e6:.1f} MB, best of {args.repeat}; load {os.getloadavg()[0]:.2f}")
    print(f"  floor, text loop           {s['floor_text']:.3f} s")
    print(f"  floor, bytes loop          {s['floor_bytes']:.3f} s")
    print(
        f"  pipekit loop, every {args.every:,}  {s['pipekit_loop']:.3f} s  "
        f"({results['ratio_loop_vs_floor_text']:.0%} of the text floor's throughput, "
        f"{results['ratio_loop_vs_floor_bytes']:.0%} of the bytes floor's)"
    )
    print(f"  pipekit loop, no checkpoint {s['pipekit_loop_no_checkpoints']:.3f} s")
    print(
        f"  checkpoints: {checkpoints['saved']} saved, {checkpoints['ms_each_in_thread']} ms each "
        f"in the checkpoint thread, {results['checkpoint_cost_ms_wall_each']} ms each on the wall clock"
    )
    print(
        f"  pipekit run (CLI): {cli['wall_s']:.3f} s wall, stage {cli['stage_s']:.3f} s "
        f"(loop + commit: fsync, rename) = {results['cli']['ratio_stage_vs_floor_text']:.0%} "
        "of the text floor's throughput"
    )
    r = resume
    print(
        f"  resume after a kill at {r['killed_at']['fraction']:.1%} (record {r['killed_at']['record']:,}): "
        f"read {r['resumed_input_bytes_read']:,} of {r['input_bytes']:,} input bytes "
        f"({r['resumed_input_bytes_read'] / r['input_bytes']:.1%}); rchar {r['resumed_rchar']:,} "
        f"(it reads back the kept part of its {r['output_bytes']:,}-byte output to hash it); "
        f"{r['resumed_wall_s']} s"
    )
    print(f"results: {args.json_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
