"""The shell stage run for real: results, failures, the runner preparing
the next started stage while every slot is busy, interrupts and kills.
Real runs, real processes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from conftest import Project


@contextlib.contextmanager
def ended_at_last(proc: subprocess.Popen[Any]) -> Iterator[subprocess.Popen[Any]]:
    """``proc``, killed after the body if it still runs (a failed test)."""
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def wait_until(cond: Any, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def shells(project: Project, cmds: dict[str, str], **extra: Any) -> None:
    project.write("in.txt", "abc\n")
    project.pipeline(
        [
            {
                "name": name,
                "uses": "shell",
                "inputs": ["in.txt"],
                "outputs": [f"{name}.out"],
                "params": {"cmd": cmd},
                **extra,
            }
            for name, cmd in cmds.items()
        ]
    )


def test_commands_give_their_results_and_failures(project: Project) -> None:
    shells(
        project,
        {
            "upper": "tr a-z A-Z < {input} > {output}",
            "shell": "tr a-z A-Z < {input} | tr A-Z a-z > {output}",
            "fails": "echo broken >&2; exit 3",
            "missing": "no-such-program-here > {output}",
        },
    )
    summary = project.run_json("--keep-going", "--jobs", "2", expect=1)
    by_name = {s["name"]: s for s in summary["stages"]}
    assert {n: s["status"] for n, s in by_name.items()} == {
        "upper": "ok",
        "shell": "ok",
        "fails": "failed",
        "missing": "failed",
    }
    assert project.read("upper.out") == "ABC\n"
    assert project.read("shell.out") == "abc\n"
    assert "exit code 3): broken" in by_name["fails"]["reason"]
    assert "exit code 127" in by_name["missing"]["reason"]  # the shell's own words
    assert "not found" in by_name["missing"]["reason"]
    run = json.loads((project.root / ".pipekit/runs" / f"{summary['run_id']}.json").read_text())
    info = {s["name"]: s["info"] for s in run["stages"]}
    assert info["upper"].get("shell") is False  # started without /bin/sh
    assert info["shell"].get("shell") is None


def test_the_command_sees_the_runners_environment_and_its_own(project: Project) -> None:
    shells(
        project, {"env": "env > {output}"}, params={"cmd": "env > {output}", "env": {"EXTRA": "x"}}
    )
    summary = project.run_json(env=project.env(PIPEKIT_TEST_ENV="from the runner"))
    assert project.statuses(summary) == {"env": "ok"}
    lines = set(project.read("env.out").splitlines())
    assert {"PIPEKIT_TEST_ENV=from the runner", "EXTRA=x", f"PWD={project.root}"} <= lines


def test_the_next_run_does_the_stage_of_a_killed_runner(project: Project, tmp_path: Path) -> None:
    started = tmp_path / "started"
    shells(project, {"slow": f"touch {started}; sleep 1.5; cp {{input}} {{output}}"})
    proc = project.popen("run")
    with ended_at_last(proc):
        assert wait_until(started.exists, 30)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    summary = project.run_json()  # its temp output was never committed
    assert project.statuses(summary) == {"slow": "ok"}
    assert project.read("slow.out") == "abc\n"


def test_with_one_job_a_failure_starts_nothing_after_it(project: Project) -> None:
    """The next stage may be prepared (locked, decided) while the failing
    one runs; it must not start once the failure is known."""
    shells(
        project,
        {"a": "sleep 0.3; exit 1", "b": "cp {input} {output}", "c": "cp {input} {output}"},
    )
    summary = project.run_json("--jobs", "1", expect=1)
    assert project.statuses(summary) == {"a": "failed", "b": "skipped", "c": "skipped"}
    assert not (project.root / "b.out").exists() and not (project.root / "c.out").exists()
    assert project.run_json("--jobs", "1", "-k", expect=1)["status"] == "failed"
    assert project.read("b.out") == "abc\n"  # their locks were let go


def test_an_interrupt_with_a_prepared_stage_ends_the_run(project: Project, tmp_path: Path) -> None:
    started = tmp_path / "started"
    shells(
        project, {f"s{i}": f"touch {started}; sleep 30; cp {{input}} {{output}}" for i in range(3)}
    )
    proc = project.popen("run", "--jobs", "1", "--json")
    with ended_at_last(proc):
        assert wait_until(started.exists, 30)
        time.sleep(0.5)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 130, err
    assert time.monotonic() - t0 < 10
    summary = json.loads(out)
    assert summary["status"] == "interrupted"
    # the locks of the stage in hand and of the prepared one were let go
    shells(project, {f"s{i}": "cp {input} {output}" for i in range(3)})
    assert project.statuses(project.run_json("--lock-timeout", "1")) == {
        "s0": "ok",
        "s1": "ok",
        "s2": "ok",
    }


def test_sigterm_to_the_runners_process_group_stops_the_commands_too(
    project: Project, tmp_path: Path
) -> None:
    """A service manager stops a run with SIGTERM to its whole process
    group; the commands (each in a session of its own) are not in it, and
    must be killed by the runner."""
    started = tmp_path / "started"
    marker = tmp_path / "survivor"
    shells(project, {"slow": f"touch {started}; sleep 2 && touch {marker}"})
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipekit", "run"],
        cwd=project.root,
        env=project.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    with ended_at_last(proc):
        assert wait_until(started.exists, 30)
        time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGTERM)
        proc.communicate(timeout=20)
    assert proc.returncode == 130
    time.sleep(2.5)
    assert not marker.exists()


def test_a_stage_run_by_a_worker_thread_runs_its_command(project: Project) -> None:
    shells(project, {"retried": "sleep 0.2; cp {input} {output}"}, retry={"attempts": 2})
    assert project.statuses(project.run_json()) == {"retried": "ok"}
    assert project.read("retried.out") == "abc\n"


def test_a_stage_waiting_for_a_slot_does_not_count_the_wait(project: Project) -> None:
    """With one job the second stage waits while the first runs; its
    duration is its own command's, not the first one's too."""
    shells(project, {"a_long": "sleep 3; cp {input} {output}", "b_short": "cp {input} {output}"})
    summary = project.run_json("--jobs", "1")
    durations = {s["name"]: s["duration_s"] for s in summary["stages"]}
    assert durations["a_long"] >= 3.0
    assert durations["b_short"] < durations["a_long"] - 1.5, durations


def test_a_stage_behind_a_long_command_is_left_to_another_runner(
    project: Project, tmp_path: Path
) -> None:
    """A runner with one job does not hold the next stage's lock while its
    long command runs: a second runner with a free slot runs that stage
    meanwhile instead of waiting for the long command to end."""
    started = tmp_path / "started"
    shells(
        project,
        {
            "a_long": f"touch {started}; sleep 10; cp {{input}} {{output}}",
            "b_short": "cp {input} {output}",
        },
    )
    first = project.popen("run", "--jobs", "1", "--json")
    with ended_at_last(first):
        assert wait_until(started.exists, 60)
        second = project.run_json("--jobs", "1", expect=0)  # waits for a_long's lock, then skips it
        out, err = first.communicate(timeout=60)
    assert first.returncode == 0, err
    ran_second = {s["name"]: s for s in second["stages"]}
    ran_first = {s["name"]: s for s in json.loads(out)["stages"]}
    assert ran_second["b_short"]["reason"] == "never run", ran_second  # the second ran it
    assert ran_first["b_short"]["reason"].startswith("up to date (done by run"), ran_first
    assert ran_first["a_long"]["reason"] == "never run"
    b = (project.root / "b_short.out").stat().st_mtime
    a = (project.root / "a_long.out").stat().st_mtime
    assert b < a, (b, a)  # while a_long still ran


def test_a_timeout_kills_the_command_and_what_it_started(project: Project, tmp_path: Path) -> None:
    marker = tmp_path / "survivor"
    shells(project, {"slow": f"sleep 3 && touch {marker}"}, timeout=0.5)
    summary = project.run_json(expect=1)
    assert "timeout" in summary["stages"][0]["reason"]
    time.sleep(3.5)
    assert not marker.exists()
