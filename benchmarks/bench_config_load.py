"""Benchmark: loading a pipeline of N shell stages (read, parse, structure,
validate, plan), each repetition in a fresh interpreter.

The pipeline is the one ``bench_shell_stages.py`` writes (N stages ``tr a-z
A-Z < in/I.txt > out/I.txt``, inputs present). Each repetition starts a new
``python`` that loads the plugin registry (not timed) and then times one
``load_pipeline`` call: everything from the pipeline file's bytes to the
plan, including importing what loading needs (TOML parser, cattrs). The plan
cache is not involved. Prints the median, minimum and maximum in ms.

Usage (from the repository root, with the pipekit dev environment)::

    python benchmarks/bench_config_load.py                   # 1,000 stages, 10 runs
    python benchmarks/bench_config_load.py --stages 200 --repeat 20

Set ``PYTHONPATH`` to a copy of ``pipekit-core/src`` to measure another
version of pipekit against the same project.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = """
import sys, time
from pathlib import Path
from pipekit import load_registry
registry = load_registry()
registry.get("stages", "shell")
start, cpu = time.perf_counter(), time.process_time()
from pipekit.plan._pipeline import load_pipeline
pipeline = load_pipeline(Path(sys.argv[1]), registry)
print(time.perf_counter() - start, time.process_time() - cpu, len(pipeline.stages))
"""


def write_project(root: Path, stages: int) -> Path:
    (root / "in").mkdir(parents=True)
    parts = ['name = "bench"\n']
    for i in range(stages):
        name = f"{i:05d}.txt"
        (root / "in" / name).write_text("some lowercase text\n")
        parts.append(
            f'\n[[stages]]\nname = "upper-{i:05d}"\nuses = "shell"\n'
            f'inputs = ["in/{name}"]\noutputs = ["out/{name}"]\n'
            'params = { cmd = "tr a-z A-Z < {input} > {output}" }\n'
        )
    file = root / "pipekit.toml"
    file.write_text("".join(parts))
    return file


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stages", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        file = write_project(Path(folder), args.stages)
        subprocess.run([sys.executable, "-c", CHILD, str(file)], check=True, capture_output=True)
        walls, cpus = [], []
        for _ in range(args.repeat):
            out = subprocess.run(
                [sys.executable, "-c", CHILD, str(file)], check=True, capture_output=True, text=True
            ).stdout.split()
            assert int(out[2]) == args.stages, out
            walls.append(float(out[0]) * 1000)
            cpus.append(float(out[1]) * 1000)
    for what, times in (("wall", walls), ("CPU", cpus)):
        print(
            f"load_pipeline, {args.stages} stages, {args.repeat} runs, {what}: "
            f"median {statistics.median(times):.1f} ms "
            f"(min {min(times):.1f}, max {max(times):.1f})"
        )


if __name__ == "__main__":
    main()
