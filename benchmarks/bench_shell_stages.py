"""Benchmark: N independent shell stages, pipekit against doit and Snakemake.

The workload is the smallest thing a build tool has to do: N independent
stages, each running ``tr a-z A-Z < in/I.txt > out/I.txt`` over its own 4 KB
input file of lowercase text. The same workload is written as three
equivalent projects (a pipekit ``pipekit.toml``, a doit ``dodo.py`` with
``file_dep``/``targets``, a Snakemake ``Snakefile`` with one wildcard rule and
an ``all`` target), each in a folder of its own, and measured side by side in
one run of this script:

first run (every size, ``--jobs`` at a time)
    Everything is out of date. Measures what the tool adds per stage on top of
    spawning the command. Reference: a plain Python loop that spawns the same
    ``/bin/sh -c 'tr ...'`` commands ``--jobs`` at a time
    (``ThreadPoolExecutor`` + ``subprocess.run``), in a fresh process.
    Median of ``--first-repeat`` runs (each from a fresh project) at sizes up
    to ``--slow-above``, one run above.

no-op rerun (every size)
    Nothing changed. After the first run and one warm-up rerun (which lets a
    tool settle caches, e.g. pipekit does not cache the hash of a file that
    changed less than 2 s before it was hashed), the median of ``--repeat``
    reruns. This is the cost of *deciding* that nothing needs to run.
    Floor: ``os.stat`` of every input and output from Python, timed both
    in-process (the raw syscall cost) and as a fresh ``python -c`` process
    (so that interpreter start-up is visible).

change one input (``--change-sizes``)
    One input file is rewritten in place with different content (a letter
    shift, same size), then the tool runs: exactly one stage must rerun.
    Median over ``--change-repeat`` repetitions, each changing a different
    input.

For every measurement: wall time, CPU time (user+sys of the whole process
tree) and peak RSS (the largest single process of the tree; see
``_measure.py``), each taken in a fresh wrapper process with a timeout that
kills the whole tree and reports "timeout" instead of hanging. Every run is
checked: exit code 0, the outputs that must be rewritten were (and hold the
upper-cased input), and the ones that must not, were not. When Snakemake's
first run times out, the outputs are made outside it so that its reruns can
still be measured (noted in the table).

pipekit is run from this interpreter's environment (the ``pipekit`` script
beside ``sys.executable``, else ``python -m pipekit``). doit and Snakemake run
from a virtual environment of the benchmark's own (``--peers-venv``, default
``benchmarks/.work/peers-venv``), created and filled from PyPI when missing.
Each tool runs with its defaults except the parallelism (pipekit ``--jobs``,
doit ``-n``, snakemake ``--cores``) and pipekit's ``--json``.

The page cache is warm for every run (inputs were just written); the numbers
are about the tools' own overheads, not about the disk. Python bytecode is
cached as in any normal install: measured commands run without
``PYTHONDONTWRITEBYTECODE`` and with ``PYTHONPYCACHEPREFIX`` pointing into the
work folder (so nothing is written outside it), and each tool is run once on a
tiny project before anything is measured, to fill that cache.

Usage (from the repository root, with the pipekit dev environment)::

    python benchmarks/bench_shell_stages.py                       # full run
    python benchmarks/bench_shell_stages.py --sizes 50 --repeat 2 --change-repeat 2
    python benchmarks/bench_shell_stages.py --skip-slow --json-out results.json
    python benchmarks/bench_shell_stages.py --profile              # + profile pipekit no-op runs
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import pstats
import random
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
MEASURE = HERE / "_measure.py"
TOOLS = ("baseline", "pipekit", "doit", "snakemake")
INPUT_SIZE = 4096
LETTER_SHIFT = bytes.maketrans(b"abcdefghijklmnopqrstuvwxyz", b"bcdefghijklmnopqrstuvwxyza")

# What every command runs before its work: "" (the default), or "sleep S; "
# with --stage-seconds S, for stages of a length users have.
BEFORE = [""]

# The baseline: the same commands from a plain Python loop, `jobs` at a time.
BASELINE_SRC = """\
import subprocess, sys
from concurrent.futures import ThreadPoolExecutor
n, jobs, w = map(int, sys.argv[1:4])
before = sys.argv[4]
def one(i):
    name = f"{i:0{w}d}.txt"
    subprocess.run(["/bin/sh", "-c", f"{before}tr a-z A-Z < in/{name} > out/{name}"], check=True)
with ThreadPoolExecutor(jobs) as pool:
    for _ in pool.map(one, range(n)):
        pass
"""

# The no-op floor: stat every input and output. Run in-process and as `python -c`.
STAT_SRC = """\
import os, sys
def stat_all(root, n, w):
    for i in range(n):
        name = f"{i:0{w}d}.txt"
        os.stat(f"{root}/in/{name}")
        os.stat(f"{root}/out/{name}")
if __name__ == "__main__":
    stat_all(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
"""


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- the workload ----------------------------------------------------------------


def text_pool(size: int = 1 << 20, seed: int = 1234) -> bytes:
    """Deterministic lowercase 'words', spaces and newlines."""
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = ["".join(rng.choices(letters, k=rng.randint(1, 10))) for _ in range(5000)]
    out: list[str] = []
    length = 0
    while length < size:
        line = " ".join(rng.choices(words, k=rng.randint(4, 14))) + "\n"
        out.append(line)
        length += len(line)
    return "".join(out).encode()[:size]


@dataclass
class Project:
    """One tool's copy of the workload at one size: ``in/``, ``out/``, config."""

    tool: str
    n: int
    root: Path
    pool: bytes

    @property
    def width(self) -> int:
        return max(5, len(str(self.n - 1)))

    def name(self, i: int) -> str:
        return f"{i:0{self.width}d}.txt"

    def input(self, i: int) -> Path:
        return self.root / "in" / self.name(i)

    def output(self, i: int) -> Path:
        return self.root / "out" / self.name(i)

    def content(self, i: int) -> bytes:
        off = (i * 7919) % (len(self.pool) - INPUT_SIZE)
        return self.pool[off : off + INPUT_SIZE]

    def create(self) -> None:
        """A fresh project: inputs, an empty out/, the tool's file; no state.
        A project already there is moved aside (see :func:`discard`)."""
        if self.root.exists():
            discard(self.root)
        (self.root / "in").mkdir(parents=True)
        (self.root / "out").mkdir()
        for i in range(self.n):
            self.input(i).write_bytes(self.content(i))
        writer = {
            "pipekit": self._write_pipekit,
            "doit": self._write_doit,
            "snakemake": self._write_snakemake,
        }.get(self.tool)
        if writer:
            writer()
        # The harness's own writes reach the disk before a tool is timed: a
        # tool that makes its outputs durable (one syncfs per commit batch,
        # say) would otherwise also pay for writing the inputs just made.
        os.sync()

    def _write_pipekit(self) -> None:
        parts = ['# generated by bench_shell_stages.py\nname = "bench"\n']
        for i in range(self.n):
            name = self.name(i)
            parts.append(
                f'\n[[stages]]\nname = "upper-{name[:-4]}"\nuses = "shell"\n'
                f'inputs = ["in/{name}"]\noutputs = ["out/{name}"]\n'
                f'params = {{ cmd = "{BEFORE[0]}tr a-z A-Z < {{input}} > {{output}}" }}\n'
            )
        (self.root / "pipekit.toml").write_text("".join(parts))

    def _write_doit(self) -> None:
        (self.root / "dodo.py").write_text(
            f"""\
# generated by bench_shell_stages.py
N = {self.n}
W = {self.width}


def task_upper():
    for i in range(N):
        name = f"{{i:0{{W}}d}}.txt"
        yield {{
            "name": name,
            "file_dep": [f"in/{{name}}"],
            "targets": [f"out/{{name}}"],
            "actions": [f"{BEFORE[0]}tr a-z A-Z < in/{{name}} > out/{{name}}"],
        }}
"""
        )

    def _write_snakemake(self) -> None:
        (self.root / "Snakefile").write_text(
            f"""\
# generated by bench_shell_stages.py
IDS = [f"{{i:0{self.width}d}}" for i in range({self.n})]

wildcard_constraints:
    id=r"\\d+"

rule all:
    input: expand("out/{{id}}.txt", id=IDS)

rule upper:
    input: "in/{{id}}.txt"
    output: "out/{{id}}.txt"
    shell: "{BEFORE[0]}tr a-z A-Z < {{input}} > {{output}}"
"""
        )

    def output_stats(self) -> list[tuple[int, int] | None]:
        out = []
        for i in range(self.n):
            try:
                st = os.stat(self.output(i))
                out.append((st.st_mtime_ns, st.st_ino))
            except FileNotFoundError:
                out.append(None)
        return out

    def check_output(self, i: int, source: bytes) -> bool:
        try:
            return self.output(i).read_bytes() == source.upper()
        except FileNotFoundError:
            return False


# Folders to delete once everything is measured. On ext4 without a journal
# (this machine's disk), creating a file scans past every inode freed in the
# last minute or so (the kernel's ``recently_deleted`` check): right after
# the harness deleted the previous fresh project (4,000 and more files),
# each file creation cost up to 10x more, and a tool's first run paid for
# the harness's deletions in proportion to the files it creates. Projects
# are therefore moved aside (a rename frees no inode) and deleted at the end.
TRASH: Path | None = None


def discard(folder: Path) -> None:
    if TRASH is None:
        shutil.rmtree(folder, ignore_errors=True)
        return
    TRASH.mkdir(parents=True, exist_ok=True)
    folder.rename(TRASH / f"{folder.name}-{time.time_ns()}")


# -- measuring ---------------------------------------------------------------------


def gnu_time() -> str | None:
    """GNU time's path if it works with ``-f %M -o FILE``, else None."""
    path = shutil.which("time") or ("/usr/bin/time" if os.path.exists("/usr/bin/time") else None)
    for candidate in filter(None, ["/usr/bin/time", path]):
        try:
            r = subprocess.run(
                [candidate, "-f", "%M", "-o", os.devnull, "true"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        except OSError:
            continue
        if r.returncode == 0:
            return candidate
    return None


@dataclass
class Sample:
    wall_s: float
    cpu_s: float | None
    rss_kb: int | None
    returncode: int | None
    timed_out: bool
    load1: float | None = None  # the 1-minute load average just before the run
    stdout: str = ""
    stderr: str = ""


class Meter:
    def __init__(self, logs: Path, timeout: float | None, time_bin: str | None) -> None:
        self.logs = logs
        self.timeout = timeout
        self.time_bin = time_bin
        self.count = 0
        self.rss_method = "GNU time %M" if time_bin else "getrusage(RUSAGE_CHILDREN).ru_maxrss"
        logs.mkdir(parents=True, exist_ok=True)

    def run(self, cmd: list[str], cwd: Path, label: str) -> Sample:
        self.count += 1
        stem = self.logs / f"{self.count:04d}-{label}"
        spec = {
            "cmd": cmd,
            "cwd": str(cwd),
            "stdout": f"{stem}.out",
            "stderr": f"{stem}.err",
            "timeout": self.timeout,
            "time_bin": self.time_bin,
            "rss_file": f"{stem}.rss",
        }
        load1 = os.getloadavg()[0]
        r = subprocess.run(
            [sys.executable, str(MEASURE), json.dumps(spec)],
            capture_output=True,
            text=True,
            check=True,
        )
        m = json.loads(r.stdout)
        self.rss_method = m["rss_method"]
        return Sample(
            wall_s=m["wall_s"],
            cpu_s=m["cpu_s"],
            rss_kb=m["maxrss_kb"],
            returncode=m["returncode"],
            timed_out=m["timed_out"],
            load1=load1,
            stdout=Path(spec["stdout"]).read_text(errors="replace"),
            stderr=Path(spec["stderr"]).read_text(errors="replace"),
        )


@dataclass
class Result:
    tool: str
    scenario: str
    n: int
    status: str = "ok"  # ok | timeout | failed | skipped
    samples: list[Sample] = field(default_factory=list)
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def walls(self) -> list[float]:
        return [s.wall_s for s in self.samples]

    def wall_median(self) -> float | None:
        return statistics.median(self.walls()) if self.samples and self.status == "ok" else None

    def cpu_median(self) -> float | None:
        cpus = [s.cpu_s for s in self.samples if s.cpu_s is not None]
        return statistics.median(cpus) if cpus and self.status == "ok" else None

    def rss_peak_mb(self) -> float | None:
        rss = [s.rss_kb for s in self.samples if s.rss_kb is not None]
        return max(rss) / 1024 if rss and self.status == "ok" else None

    def to_json(self) -> dict[str, Any]:
        med = self.wall_median()
        cpu = self.cpu_median()
        rss = self.rss_peak_mb()
        loads = [s.load1 for s in self.samples if s.load1 is not None]
        return {
            "tool": self.tool,
            "scenario": self.scenario,
            "n": self.n,
            "status": self.status,
            "wall_s_median": None if med is None else round(med, 4),
            "wall_s": [round(w, 4) for w in self.walls()],
            "cpu_s_median": None if cpu is None else round(cpu, 4),
            "peak_rss_mb": None if rss is None else round(rss, 1),
            "note": self.note,
            "load1_max": round(max(loads), 2) if loads else None,
            **({"extra": self.extra} if self.extra else {}),
        }


# -- the tools ---------------------------------------------------------------------


def pipekit_command() -> list[str]:
    script = Path(sys.executable).parent / "pipekit"
    return [str(script)] if script.exists() else [sys.executable, "-m", "pipekit"]


def tool_command(tool: str, proj: Project, jobs: int, peers: Path | None) -> list[str]:
    if tool == "baseline":
        return [
            sys.executable,
            "-c",
            BASELINE_SRC,
            str(proj.n),
            str(jobs),
            str(proj.width),
            BEFORE[0],
        ]
    if tool == "pipekit":
        return [*pipekit_command(), "run", "--jobs", str(jobs), "--json", "-f", "pipekit.toml"]
    assert peers is not None
    if tool == "doit":
        return [str(peers / "bin" / "doit"), "run", "-f", "dodo.py", "-n", str(jobs)]
    if tool == "snakemake":
        return [str(peers / "bin" / "snakemake"), "--cores", str(jobs), "--snakefile", "Snakefile"]
    raise ValueError(tool)


def ensure_peers(venv: Path, packages: list[str]) -> None:
    """A virtual environment with doit and Snakemake, made when missing."""
    if (venv / "bin" / "doit").exists() and (venv / "bin" / "snakemake").exists():
        return
    if not (venv / "bin" / "python").exists():
        log(f"creating the peers' virtual environment {venv}")
        base = getattr(sys, "_base_executable", None) or sys.executable
        subprocess.run([base, "-m", "venv", str(venv)], check=True)
    log(f"installing {' '.join(packages)} into {venv} (from PyPI)")
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", *packages], check=True
    )


def source_state() -> dict[str, Any]:
    """Which pipekit source was measured: the commit, and whether the work tree
    of pipekit-core / pipekit-stages had uncommitted changes."""
    repo = HERE.parent

    def git(*a: str) -> str:
        r = subprocess.run(["git", "-C", str(repo), *a], capture_output=True, text=True)
        return r.stdout.rstrip("\n") if r.returncode == 0 else ""

    dirty = git("status", "--porcelain", "--", "pipekit-core", "pipekit-stages").splitlines()
    return {"commit": git("rev-parse", "HEAD") or None, "pipekit_uncommitted_files": dirty}


def versions(peers: Path | None) -> dict[str, Any]:
    out: dict[str, Any] = {"python": platform.python_version()}
    for dist in ("pipekit-core", "pipekit-stages"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    if peers is not None:
        probe = (
            "import importlib.metadata as m, json, platform\n"
            "print(json.dumps({'doit': m.version('doit'), 'snakemake': m.version('snakemake'),"
            " 'peers_python': platform.python_version()}))"
        )
        r = subprocess.run(
            [str(peers / "bin" / "python"), "-c", probe], capture_output=True, text=True
        )
        if r.returncode == 0:
            out.update(json.loads(r.stdout))
    return out


def pipekit_counts(sample: Sample) -> dict[str, Any]:
    """Stage counts from ``pipekit run --json`` (for the record, and checks)."""
    try:
        doc = json.loads(sample.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {}
    m = doc.get("metrics", {})
    return {k: m.get(k) for k in ("stages_ok", "stages_skipped", "hashed_files") if k in m}


# -- the scenarios -----------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace, meter: Meter, peers: Path | None) -> None:
        self.args = args
        self.meter = meter
        self.peers = peers
        self.pool = text_pool()
        self.results: list[Result] = []
        self.profiles: dict[str, Any] = {}

    def add(self, result: Result) -> Result:
        self.results.append(result)
        med = result.wall_median()
        shown = f"{med:.3f}s" if med is not None else result.status
        log(f"  {result.tool:<9} {result.scenario:<18} N={result.n:<6} {shown}  {result.note}")
        return result

    def run_once(self, tool: str, proj: Project, label: str) -> Sample:
        cmd = tool_command(tool, proj, self.args.jobs, self.peers)
        return self.meter.run(cmd, proj.root, f"{tool}-{proj.n}-{label}")

    def check(
        self,
        tool: str,
        proj: Project,
        sample: Sample,
        before: list[Any],
        expect: set[int] | None,
        sources: dict[int, bytes],
    ) -> str | None:
        """None if the run did what it must: exit 0; the outputs in ``expect``
        rewritten (None: all of them) with the right content; no others."""
        if sample.timed_out:
            return "timeout"
        if sample.returncode != 0:
            tail = " | ".join(sample.stderr.strip().splitlines()[-3:])
            return f"exit code {sample.returncode}: {tail[-300:]}"
        after = proj.output_stats()
        changed = {i for i, (a, b) in enumerate(zip(before, after)) if a != b}
        wanted = set(range(proj.n)) if expect is None else expect
        if changed != wanted:
            extra = sorted(changed - wanted)[:5]
            missing = sorted(wanted - changed)[:5]
            return (
                f"{len(changed)} output(s) rewritten, expected {len(wanted)}"
                f" (unexpected {extra}, missing {missing})"
            )
        bad = [i for i in wanted if not proj.check_output(i, sources.get(i) or proj.content(i))]
        if bad:
            return f"{len(bad)} output(s) with wrong content, e.g. {proj.name(bad[0])}"
        return None

    def measure(
        self,
        res: Result,
        tool: str,
        proj: Project,
        label: str,
        expect: set[int] | None,
        sources: dict[int, bytes] | None = None,
        keep: bool = True,
    ) -> bool:
        before = proj.output_stats()
        sample = self.run_once(tool, proj, label)
        problem = self.check(tool, proj, sample, before, expect, sources or {})
        if tool == "pipekit":
            res.extra.setdefault("pipekit_metrics", []).append(pipekit_counts(sample))
        if problem is not None:
            res.status = "timeout" if sample.timed_out else "failed"
            res.note = problem
            if sample.timed_out:
                done = sum(1 for i in range(proj.n) if proj.output(i).exists())
                res.note = (
                    f"killed after {self.args.timeout:g}s, {done} of {proj.n} outputs written"
                )
            res.samples = [sample] if sample.timed_out else []
            return False
        if keep:
            res.samples.append(sample)
        return True

    def tool_at(self, tool: str, n: int) -> None:
        args = self.args
        scenarios = ["first-run", "noop-rerun"]
        if n in args.change_sizes and tool != "baseline":
            scenarios.append("change-one-input")
        if tool == "baseline":
            scenarios = ["first-run"]
        if args.skip_slow and tool == "snakemake" and n > args.slow_above:
            for sc in scenarios:
                self.add(Result(tool, sc, n, "skipped", note="--skip-slow"))
            return
        proj = Project(tool, n, args.work / f"n{n}" / tool, self.pool)
        log(f"{tool} at N={n}: writing the project in {proj.root}")
        proj.create()

        first = Result(tool, "first-run", n)
        reps = args.first_repeat if n <= args.slow_above else 1
        for k in range(reps):
            if k:
                proj.create()  # everything out of date again, no state
            ok = self.measure(first, tool, proj, f"first{k}", expect=None)
            if not ok:
                break
        if ok and reps > 1:
            first.note = f"median of {reps}, each from a fresh project"
        self.add(first)
        if tool == "baseline":
            return
        adopted = False
        if not ok and first.status == "timeout":
            adopted = self.adopt_outputs(tool, proj)
        if not ok and not adopted:
            for sc in scenarios[1:]:
                self.add(Result(tool, sc, n, "skipped", note="the first run did not succeed"))
            return

        noop = Result(tool, "noop-rerun", n)
        ok = self.measure(noop, tool, proj, "warmup", expect=set(), keep=False)
        for k in range(args.repeat if ok else 0):
            if not self.measure(noop, tool, proj, f"noop{k}", expect=set()):
                break
        if noop.status == "ok":
            noop.note = f"median of {len(noop.samples)} after 1 warm-up"
            if adopted:
                noop.note += "; outputs made outside the tool after its first run timed out"
        self.add(noop)

        if "change-one-input" in scenarios:
            change = Result(tool, "change-one-input", n)
            reps = args.change_repeat
            for k in range(reps):
                i = (k + 1) * n // (reps + 1)
                new = proj.content(i).translate(LETTER_SHIFT)
                with open(proj.input(i), "r+b") as f:  # in place: same inode, new mtime
                    f.write(new)
                os.sync()  # as after create(): no tool pays for the harness's write
                if not self.measure(change, tool, proj, f"change{k}", expect={i}, sources={i: new}):
                    break
            if change.status == "ok":
                change.note = f"median of {len(change.samples)}, each a different input"
            self.add(change)

        if args.profile and tool == "pipekit":
            self.profile_pipekit(proj)

    def adopt_outputs(self, tool: str, proj: Project) -> bool:
        """After a first run that timed out, make the outputs outside the tool
        so that its reruns can still be measured, where the tool then takes
        them as up to date: Snakemake decides by file times when it holds no
        record of a job (its default triggers only compare records it has).
        doit and pipekit would rerun every stage they hold no record of."""
        if tool != "snakemake":
            return False
        log(f"{tool} at N={proj.n}: first run timed out; making the outputs outside it")
        for i in range(proj.n):
            proj.output(i).write_bytes(proj.content(i).upper())
        for leftover in ("locks", "incomplete"):  # what a killed Snakemake leaves behind
            shutil.rmtree(proj.root / ".snakemake" / leftover, ignore_errors=True)
        return True

    def floors_at(self, n: int) -> None:
        """The no-op floor: stat every input and output of a finished project."""
        proj = Project("baseline", n, self.args.work / f"n{n}" / "baseline", self.pool)
        if not proj.output(n - 1).exists():
            return
        ns: dict[str, Any] = {"__name__": "statloop"}
        exec(compile(STAT_SRC, "<stat-loop>", "exec"), ns)
        stat_all = ns["stat_all"]
        inproc = Result("stat-loop", "noop-floor (in-process)", n)
        stat_all(str(proj.root), n, proj.width)  # warm-up
        for _ in range(self.args.repeat):
            t0 = time.perf_counter()
            stat_all(str(proj.root), n, proj.width)
            inproc.samples.append(Sample(time.perf_counter() - t0, None, None, 0, False))
        inproc.note = f"median of {self.args.repeat}; 2N stats, no process start"
        self.add(inproc)

        fresh = Result("stat-loop", "noop-floor (python -c)", n)
        cmd = [sys.executable, "-c", STAT_SRC, str(proj.root), str(n), str(proj.width)]
        for k in range(self.args.repeat + 1):
            sample = self.meter.run(cmd, proj.root, f"statloop-{n}-{k}")
            if sample.returncode != 0:
                fresh.status, fresh.note = "failed", sample.stderr[-200:]
                break
            if k:  # the first is a warm-up
                fresh.samples.append(sample)
        if fresh.status == "ok":
            fresh.note = f"median of {self.args.repeat}; includes interpreter start-up"
        self.add(fresh)

    def prime(self, tools: list[str]) -> None:
        """Run every tool on a tiny project, unmeasured, to fill the bytecode
        cache (and the OS's caches of the tools' own files)."""
        for tool in ("baseline", *tools):
            proj = Project(tool, 4, self.args.work / "prime" / tool, self.pool)
            proj.create()
            for _ in range(2):
                cmd = tool_command(tool, proj, self.args.jobs, self.peers)
                r = subprocess.run(cmd, cwd=proj.root, capture_output=True, text=True)
                if r.returncode != 0:
                    raise SystemExit(f"{tool} failed on a 4-stage project:\n{r.stderr[-2000:]}")
        subprocess.run(
            [sys.executable, "-c", STAT_SRC, str(proj.root), "4", str(proj.width)], check=True
        )
        discard(self.args.work / "prime")

    def profile_pipekit(self, proj: Project) -> None:
        """One no-op pipekit run under -X importtime, one under cProfile."""
        base = [sys.executable]
        run = [
            "-m",
            "pipekit",
            "run",
            "--jobs",
            str(self.args.jobs),
            "--json",
            "-f",
            "pipekit.toml",
        ]
        out_dir = self.args.work / "profiles"
        out_dir.mkdir(parents=True, exist_ok=True)
        log(f"pipekit at N={proj.n}: profiling a no-op run")

        r = subprocess.run(
            [*base, "-X", "importtime", *run], cwd=proj.root, capture_output=True, text=True
        )
        imports: list[tuple[int, int, str]] = []
        for line in r.stderr.splitlines():
            if not line.startswith("import time:") or "self [us]" in line:
                continue
            self_us, cum_us, name = (p.strip() for p in line[len("import time:") :].split("|"))
            imports.append((int(self_us), int(cum_us), name))
        (out_dir / f"importtime-n{proj.n}.txt").write_text(r.stderr)
        top_level = sorted((i for i in imports if not i[2].startswith(" ")), key=lambda i: -i[1])
        total_ms = sum(i[0] for i in imports) / 1000

        prof = out_dir / f"noop-n{proj.n}.prof"
        t0 = time.perf_counter()
        subprocess.run(
            [*base, "-m", "cProfile", "-o", str(prof), *run],
            cwd=proj.root,
            capture_output=True,
            check=False,
        )
        wall = time.perf_counter() - t0
        stats = pstats.Stats(str(prof))
        rows = []
        for (file, line, func), (_cc, nc, tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
            if file.startswith("<frozen") or file == "<string>" or func in _PLUMBING:
                continue  # runpy, importlib's machinery: the same lines on top of every profile
            where = f"{Path(file).name}:{line}({func})" if line else func
            if "site-packages" in file or "/lib/python" in file:
                where = f"{Path(file).parent.name}/{where}"
            rows.append((ct, tt, nc, where))
        by_cum = sorted(rows, key=lambda r: -r[0])[:25]
        by_tot = sorted(rows, key=lambda r: -r[1])[:20]
        text = [
            f"pipekit no-op run, N={proj.n}, under cProfile: {wall:.2f}s wall",
            "",
            "by cumulative time:",
            *(f"  {c:8.3f}s cum {t:8.3f}s self {n:>9} calls  {w}" for c, t, n, w in by_cum),
            "",
            "by own time:",
            *(f"  {t:8.3f}s self {c:8.3f}s cum {n:>9} calls  {w}" for c, t, n, w in by_tot),
        ]
        (out_dir / f"noop-n{proj.n}.txt").write_text("\n".join(text) + "\n")
        self.profiles[str(proj.n)] = {
            "import_total_ms": round(total_ms, 1),
            "import_top_ms": [(name, round(cum / 1000, 1)) for _s, cum, name in top_level[:12]],
            "cprofile_wall_s": round(wall, 3),
            "by_cumulative": [(w, round(c, 4), round(t, 4), n) for c, t, n, w in by_cum],
            "by_own_time": [(w, round(t, 4), round(c, 4), n) for c, t, n, w in by_tot],
            "files": [
                str(prof),
                str(out_dir / f"noop-n{proj.n}.txt"),
                str(out_dir / f"importtime-n{proj.n}.txt"),
            ],
        }
        log(f"  imports {total_ms:.0f} ms in all; profile in {out_dir / f'noop-n{proj.n}.txt'}")


_PLUMBING = {"<built-in method builtins.exec>", "<built-in method builtins.__import__>"}


# -- the report --------------------------------------------------------------------


def reference(results: list[Result], r: Result) -> float | None:
    """What a row is compared with: the Python loop for first runs, the fresh
    stat-loop process for no-op and change reruns."""
    want = None
    if r.scenario == "first-run" and r.tool != "baseline":
        want = ("baseline", "first-run")
    elif r.scenario in ("noop-rerun", "change-one-input"):
        want = ("stat-loop", "noop-floor (python -c)")
    for o in results:
        if want and (o.tool, o.scenario, o.n) == (*want, r.n):
            return o.wall_median()
    return None


def table(results: list[Result]) -> str:
    order = {
        "first-run": 0,
        "noop-rerun": 1,
        "noop-floor (in-process)": 2,
        "noop-floor (python -c)": 3,
        "change-one-input": 4,
    }
    tools = {t: i for i, t in enumerate(("baseline", "stat-loop", "pipekit", "doit", "snakemake"))}
    rows = sorted(results, key=lambda r: (order.get(r.scenario, 9), r.n, tools.get(r.tool, 9)))
    head = [
        "tool",
        "scenario",
        "N",
        "wall s (median)",
        "min-max",
        "x ref",
        "CPU s",
        "peak RSS MB",
        "runs",
        "note",
    ]
    lines = [head]
    for r in rows:
        med, cpu, rss = r.wall_median(), r.cpu_median(), r.rss_peak_mb()
        ref = reference(results, r)
        walls = r.walls()
        lines.append(
            [
                r.tool,
                r.scenario,
                str(r.n),
                f"{med:.3f}" if med is not None else r.status,
                f"{min(walls):.3f}-{max(walls):.3f}" if med is not None and len(walls) > 1 else "",
                f"{med / ref:.1f}x" if med is not None and ref else "",
                f"{cpu:.2f}" if cpu is not None else "",
                f"{rss:.1f}" if rss is not None else "",
                str(len(walls)) if med is not None else "",
                r.note,
            ]
        )
    widths = [max(len(row[i]) for row in lines) for i in range(len(head) - 1)]
    out = []
    for k, row in enumerate(lines):
        cells = [
            c.rjust(w) if 2 <= i <= 8 else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))
        ]
        out.append("  ".join(cells) + "  " + row[-1])
        if k == 0:
            out.append("-" * (sum(widths) + 2 * len(widths) + 4))
    return "\n".join(out)


# -- main ----------------------------------------------------------------------------


def int_list(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _add_workload_options(p: argparse.ArgumentParser) -> None:
    """What is measured: sizes, repetitions, tools, stage length."""
    p.add_argument(
        "--sizes",
        type=int_list,
        default=[1000, 10000],
        help="numbers of stages, comma-separated (default: 1000,10000)",
    )
    p.add_argument(
        "--change-sizes",
        type=int_list,
        default=[1000],
        help="sizes at which to measure a one-input change (default: 1000)",
    )
    p.add_argument("--jobs", type=int, default=2, help="parallel jobs for every tool (default: 2)")
    p.add_argument("--repeat", type=int, default=5, help="measured no-op reruns (default: 5)")
    p.add_argument(
        "--first-repeat",
        type=int,
        default=3,
        help="measured first runs at sizes up to --slow-above, each from a fresh "
        "project; larger sizes get one (default: 3)",
    )
    p.add_argument(
        "--change-repeat",
        type=int,
        default=3,
        help="measured one-input changes, each a different input (default: 3)",
    )
    p.add_argument(
        "--tools",
        default=",".join(TOOLS[1:]),
        help="tools to measure besides the baseline (default: pipekit,doit,snakemake)",
    )
    p.add_argument(
        "--stage-seconds",
        type=float,
        default=0.0,
        help="every command sleeps this long before its work, for every tool and the "
        "loop (default: 0: 1 ms commands; 0.1 gives stages of about 100 ms)",
    )


def _add_setting_options(p: argparse.ArgumentParser) -> None:
    """How it runs: time limits, folders, peers, output, profiles."""
    p.add_argument(
        "--timeout",
        type=float,
        default=1800.0,
        help="seconds before one run is killed and reported as timeout (default: 1800)",
    )
    p.add_argument(
        "--skip-slow", action="store_true", help="skip Snakemake at sizes above --slow-above"
    )
    p.add_argument(
        "--slow-above",
        type=int,
        default=1000,
        help="see --skip-slow and --first-repeat (default: 1000)",
    )
    p.add_argument(
        "--work",
        type=Path,
        default=HERE / ".work",
        help="work folder (default: benchmarks/.work, gitignored)",
    )
    p.add_argument(
        "--peers-venv",
        type=Path,
        default=None,
        help="virtual environment with doit and snakemake; made when missing "
        "(default: WORK/peers-venv)",
    )
    p.add_argument(
        "--peer-packages",
        default="doit snakemake",
        help="what to pip-install into a new peers venv (default: 'doit snakemake')",
    )
    p.add_argument(
        "--json-out",
        type=Path,
        default=None,
        help="write the results as JSON here (default: WORK/results.json)",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="also profile one pipekit no-op run per size (-X importtime, cProfile)",
    )
    p.add_argument("--keep", action="store_true", help="keep the generated projects afterwards")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    _add_workload_options(p)
    _add_setting_options(p)
    args = p.parse_args(argv)
    if args.stage_seconds > 0:
        BEFORE[0] = f"sleep {args.stage_seconds:g}; "
    args.tools = [t for t in args.tools.split(",") if t]
    unknown = set(args.tools) - set(TOOLS[1:])
    if unknown:
        p.error(f"unknown tool(s): {', '.join(sorted(unknown))}")
    args.work = args.work.resolve()
    args.peers_venv = (args.peers_venv or args.work / "peers-venv").absolute()
    args.json_out = args.json_out or args.work / "results.json"
    return args


def results_document(
    args: argparse.Namespace,
    bench: Bench,
    meter: Meter,
    info: dict[str, str],
    source: dict[str, Any],
    started: float,
) -> dict[str, Any]:
    """What ``--json-out`` holds: the settings, the machine and every result."""
    peers = bench.peers
    commands = {
        t: " ".join(tool_command(t, Project(t, 1, Path("."), b""), args.jobs, peers))
        for t in ("pipekit", *(t for t in ("doit", "snakemake") if peers))
    }
    return {
        "benchmark": "N independent shell stages: tr a-z A-Z < in/I.txt > out/I.txt, 4 KB inputs",
        "stage_seconds": args.stage_seconds,
        "versions": info,
        "pipekit_source": source,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python_executable": sys.executable,
        },
        "settings": {
            "sizes": args.sizes,
            "change_sizes": args.change_sizes,
            "jobs": args.jobs,
            "repeat": args.repeat,
            "first_repeat": args.first_repeat,
            "change_repeat": args.change_repeat,
            "timeout_s": args.timeout,
            "skip_slow": args.skip_slow,
            "rss_method": meter.rss_method,
            "commands": commands,
            "argv": sys.argv,
        },
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "duration_s": round(time.time() - started, 1),
        "load_average_at_end": os.getloadavg(),
        "results": [r.to_json() for r in bench.results],
        **({"pipekit_profiles": bench.profiles} if bench.profiles else {}),
    }


def print_summary(
    args: argparse.Namespace, bench: Bench, meter: Meter, info: dict[str, str]
) -> None:
    """The table of results, and the profiles when asked for."""
    print()
    print("versions: " + ", ".join(f"{k} {v}" for k, v in info.items()))
    print(
        f"machine: {os.cpu_count()} CPUs, {platform.platform()}; jobs={args.jobs}; "
        f"peak RSS = largest single process of the tree ({meter.rss_method})"
    )
    print("x ref: first-run vs the Python loop; reruns vs the stat loop as a fresh process\n")
    print(table(bench.results))
    if bench.profiles:
        for n, p in bench.profiles.items():
            print(
                f"\npipekit no-op N={n}: imports {p['import_total_ms']} ms; top of cProfile "
                f"(cumulative), {p['cprofile_wall_s']}s under the profiler:"
            )
            for w, c, t, calls in p["by_cumulative"][:12]:
                print(f"  {c:8.3f}s cum {t:8.3f}s self {calls:>8}  {w}")


def main(argv: list[str] | None = None) -> int:
    global TRASH
    args = parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    TRASH = args.work / "trash"
    if TRASH.exists():  # left by an interrupted run of this script
        log(f"deleting {TRASH}; measurements in the next minute may pay for it (see TRASH)")
        shutil.rmtree(TRASH)
    peers = None
    if {"doit", "snakemake"} & set(args.tools):
        ensure_peers(args.peers_venv, args.peer_packages.split())
        peers = args.peers_venv
    # Bytecode cached in the work folder, as a normal install would cache it.
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ["PYTHONPYCACHEPREFIX"] = str(args.work / "pycache")
    time_bin = gnu_time()
    meter = Meter(args.work / "logs" / time.strftime("%Y%m%dT%H%M%S"), args.timeout, time_bin)
    info = versions(peers)
    log("versions: " + ", ".join(f"{k} {v}" for k, v in info.items()))
    log(f"peak RSS via {'GNU time (' + time_bin + ')' if time_bin else 'getrusage in a wrapper'}")

    source = source_state()
    if source["pipekit_uncommitted_files"]:
        log(f"note: pipekit has uncommitted changes: {source['pipekit_uncommitted_files']}")
    bench = Bench(args, meter, peers)
    log("priming: each tool once on a 4-stage project (unmeasured)")
    bench.prime(args.tools)
    started = time.time()
    for n in args.sizes:
        for tool in ("baseline", *[t for t in TOOLS[1:] if t in args.tools]):
            bench.tool_at(tool, n)
        bench.floors_at(n)
        if not args.keep:
            discard(args.work / f"n{n}")
    shutil.rmtree(TRASH, ignore_errors=True)
    log("deleted the projects; on an ext4 without a journal, wait 5 minutes before measuring again")

    doc = results_document(args, bench, meter, info, source, started)
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(json.dumps(doc, indent=2) + "\n")

    print_summary(args, bench, meter, info)
    print(f"\nJSON: {args.json_out}")
    failed = [r for r in bench.results if r.status == "failed"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
