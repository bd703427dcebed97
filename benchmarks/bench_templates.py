"""Benchmark: a pipeline of N stages made by one ``foreach``, against the same
N stages written out (issue 21).

Two projects with the same inputs and the same N ``shell`` stages, one
written as N ``[[stages]]`` tables, one as a single table with ``foreach``
over N items. For each, in fresh ``pipekit`` processes (CPU seconds of the
process tree, median of ``--repeat``):

- full load: ``pipekit status`` with the plan cache off (read, expand the
  templates, structure, validate, plan, decide every stage);
- no-op: ``pipekit status`` with the plan cache on (the plan made once);
- one target: ``pipekit status upper@00007`` (decides that stage only).

Usage (from the repository root)::

    python benchmarks/bench_templates.py                 # 10,000 stages
    python benchmarks/bench_templates.py --stages 2000 --repeat 3
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CMD = "tr a-z A-Z < {input} > {output}"


def write_projects(root: Path, stages: int) -> dict[str, Path]:
    """The written-out and the foreach project (inputs shared by copy)."""
    names = [f"{i:05d}" for i in range(stages)]
    written = ['name = "bench"\n'] + [
        f'\n[[stages]]\nname = "upper@{n}"\nuses = "shell"\ninputs = ["in/{n}.txt"]\n'
        f'outputs = ["out/{n}.txt"]\nparams = {{ cmd = "{CMD}" }}\n'
        for n in names
    ]
    items = ", ".join(f'"{n}"' for n in names)
    templated = (
        f'name = "bench"\n\n[[stages]]\nname = "upper"\nforeach = [{items}]\nuses = "shell"\n'
        f'inputs = ["in/${{item}}.txt"]\noutputs = ["out/${{item}}.txt"]\n'
        f'params = {{ cmd = "{CMD}" }}\n'
    )
    projects = {"written out": root / "written", "foreach": root / "foreach"}
    for kind, folder in projects.items():
        (folder / "in").mkdir(parents=True)
        for n in names:
            (folder / "in" / f"{n}.txt").write_text("some text\n")
        (folder / "pipekit.toml").write_text(
            "".join(written) if kind == "written out" else templated
        )
    return projects


def cpu_seconds(args: list[str], cwd: Path, env: dict[str, str]) -> float:
    """CPU seconds (user + system) of one ``pipekit`` process and its children."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, "-m", "pipekit", *args], cwd=cwd, env=env, check=True,
                   stdout=subprocess.DEVNULL)  # fmt: skip
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def measure(folder: Path, repeat: int) -> dict[str, float]:
    env = dict(os.environ, PIPEKIT_CACHE_DIR=str(folder / ".cache"))
    runs = {
        "full load": (["status", "-q"], dict(env, PIPEKIT_PLAN_CACHE="0")),
        "no-op (plan cache)": (["status", "-q"], env),
        "one target": (["status", "-q", "upper@00007"], env),
    }
    cpu_seconds(["run", "--dry-run", "-q"], folder, env)  # makes the plan cache, runs nothing
    return {
        what: statistics.median(cpu_seconds(args, folder, e) for _ in range(repeat))
        for what, (args, e) in runs.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stages", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        projects = write_projects(Path(tmp), args.stages)
        results = {kind: measure(folder, args.repeat) for kind, folder in projects.items()}
    print(f"{args.stages:,} stages, CPU seconds, median of {args.repeat}")
    for what in results["written out"]:
        plain, made = results["written out"][what], results["foreach"][what]
        print(f"  {what:<20} written out {plain:6.3f}  foreach {made:6.3f}  ({made / plain:.2f}x)")


if __name__ == "__main__":
    main()
