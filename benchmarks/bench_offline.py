"""What the offline guard costs (docs/offline.md), measured side by side in
one script run: the same pipelines with the guard (default) and without it
(``--allow-network all``), and the floors of their commands.

Scenarios (medians of --repeat runs, the two variants alternated):

- first run of N independent ``shell`` stages (``tr a-z A-Z < in > out``):
  guarded = each command in the runner thread's network namespace, entered
  the default way (``setns`` around the fork as root, else ``nsenter``);
  guarded-nsenter = the same through ``nsenter`` (``PIPEKIT_NETNS=nsenter``;
  only measured as root, where it is not the default); allowed = plain
  ``/bin/sh -c``;
- one record stage (``upper``) over --lines lines: the audit hook's cost on
  a Python processor;
- no-op rerun of the N shell stages (nothing runs: the guard is not even
  imported, which the script checks with ``-X importtime``);
- floors: N ``/bin/sh -c tr`` commands from a Python loop, plain and through
  ``nsenter`` into one namespace.

    python benchmarks/bench_offline.py                 # N=500, 5 repeats
    python benchmarks/bench_offline.py --n 200 --repeat 3 --lines 100000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

WORDS = b"the quick brown fox jumps over the lazy dog\n"


def timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float, int]:
    """(wall s, CPU s of the child tree, exit code)."""
    before = os.times()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wall = time.perf_counter() - t0
    after = os.times()
    cpu = (after.children_user - before.children_user) + (
        after.children_system - before.children_system
    )
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr.decode(errors="replace")[-2000:])
    return wall, cpu, proc.returncode


def shell_project(root: Path, n: int) -> None:
    (root / "in").mkdir(parents=True)
    lines = ['[[stages]]\nname = "s{i}"\nuses = "shell"\ninputs = ["in/{i}.txt"]\n'
             'outputs = ["out/{i}.txt"]\nparams = {{ cmd = "tr a-z A-Z < {{input}} > {{output}}" }}\n']
    text = []
    for i in range(n):
        (root / "in" / f"{i}.txt").write_bytes(WORDS * 90)
        text.append(lines[0].format(i=i))
    (root / "pipekit.toml").write_text("\n".join(text))
    old = time.time() - 10
    for p in [*root.rglob("*.txt"), root / "pipekit.toml"]:
        os.utime(p, (old, old))


def record_project(root: Path, lines: int) -> None:
    root.mkdir(parents=True)
    (root / "in.txt").write_bytes(WORDS * lines)
    (root / "pipekit.toml").write_text(
        '[[stages]]\nname = "up"\nuses = "upper"\ninputs = ["in.txt"]\noutputs = ["out.txt"]\n'
    )
    old = time.time() - 10
    for p in (root / "in.txt", root / "pipekit.toml"):
        os.utime(p, (old, old))


def reset(root: Path) -> None:
    shutil.rmtree(root / ".pipekit", ignore_errors=True)
    shutil.rmtree(root / "out", ignore_errors=True)
    (root / "out.txt").unlink(missing_ok=True)


def median(values: list[float]) -> float:
    return round(statistics.median(values), 4)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=500, help="shell stages (default 500)")
    ap.add_argument("--lines", type=int, default=200_000, help="record stage lines")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--json-out", type=Path, default=None)
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="pipekit-bench-offline-"))
    env = dict(os.environ, PIPEKIT_CACHE_DIR=str(work / "cache"))
    pk = [sys.executable, "-m", "pipekit", "run", "-q", "--jobs", str(args.jobs)]
    shells, records = work / "shell", work / "record"
    shell_project(shells, args.n)
    record_project(records, args.lines)
    variants: dict[str, tuple[list[str], dict[str, str]]] = {
        "guarded": ([], {}),
        "allowed": (["--allow-network", "all"], {}),
    }
    if os.geteuid() == 0:  # the default is setns: measure nsenter beside it
        variants["guarded-nsenter"] = ([], {"PIPEKIT_NETNS": "nsenter"})
    results: dict[str, Any] = {"n": args.n, "lines": args.lines, "jobs": args.jobs}
    try:
        for scenario, root in (("first_run_shell", shells), ("record_stage", records)):
            names = list(variants) if scenario == "first_run_shell" else ["guarded", "allowed"]
            samples: dict[str, list[tuple[float, float]]] = {v: [] for v in names}
            for r in range(args.repeat):
                order = names if r % 2 == 0 else list(reversed(names))
                for v in order:
                    reset(root)
                    extra_args, extra_env = variants[v]
                    wall, cpu, code = timed([*pk, *extra_args], root, {**env, **extra_env})
                    assert code == 0, f"{scenario} {v}: exit {code}"
                    samples[v].append((wall, cpu))
            results[scenario] = {
                v: {"wall_s": median([w for w, _ in s]), "cpu_s": median([c for _, c in s])}
                for v, s in samples.items()
            }
        reset(shells)
        timed(pk, shells, env)
        noop = [timed(pk, shells, env)[0] for _ in range(args.repeat)]
        results["noop_rerun_shell"] = {"wall_s": median(noop)}
        imp = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "pipekit", "run", "-q"],
            cwd=shells, env=env, capture_output=True, text=True,
        )
        results["noop_imports_netguard"] = "pipekit.isolation._guard" in imp.stderr
        # floors: the commands alone, from a Python loop
        holder = subprocess.Popen(
            ["unshare", "--net", "--", "sleep", "600"], stdout=subprocess.DEVNULL
        )
        try:
            time.sleep(0.2)
            floors = {}
            for label, prefix in (
                ("sh", []),
                ("nsenter+sh", ["nsenter", "--target", str(holder.pid), "--net", "--"]),
            ):
                t0 = time.perf_counter()
                for i in range(args.n):
                    subprocess.run(
                        [*prefix, "/bin/sh", "-c", f"tr a-z A-Z < in/{i}.txt > /dev/null"],
                        cwd=shells, check=True,
                    )
                floors[label] = round(time.perf_counter() - t0, 4)
            results["floor_loop_1_job"] = floors
        finally:
            holder.kill()
            holder.wait()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(results, indent=2))
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
