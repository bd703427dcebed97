"""Command starters (pipekit_stages.starters): helper processes that start
the shell stage's commands for the runner, and the runner preparing the
next started stage while every slot is busy. Real runs, real processes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Project


def starters_in(root: Path) -> list[int]:
    """Pids of command starters whose folder is ``root``."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            cwd = os.readlink(f"/proc/{entry}/cwd")
        except OSError:
            continue
        if b"import _execd" in cmdline and cwd == str(root):
            pids.append(int(entry))
    return pids


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
            {"name": name, "uses": "shell", "inputs": ["in.txt"], "outputs": [f"{name}.out"],
             "params": {"cmd": cmd}, **extra}
            for name, cmd in cmds.items()
        ]
    )


@pytest.mark.parametrize("starters", ["always", "off"])
def test_commands_give_the_same_results_with_and_without_starters(
    project: Project, starters: str
) -> None:
    shells(
        project,
        {
            "upper": "tr a-z A-Z < {input} > {output}",
            "shell": "tr a-z A-Z < {input} | tr A-Z a-z > {output}",
            "fails": "echo broken >&2; exit 3",
            "missing": "no-such-program-here > {output}",
        },
    )
    env = project.env(PIPEKIT_SHELL_STARTERS=starters)
    summary = project.run_json("--keep-going", "--jobs", "2", expect=1, env=env)
    by_name = {s["name"]: s for s in summary["stages"]}
    assert {n: s["status"] for n, s in by_name.items()} == {
        "upper": "ok", "shell": "ok", "fails": "failed", "missing": "failed",
    }
    assert project.read("upper.out") == "ABC\n"
    assert project.read("shell.out") == "abc\n"
    assert "exit code 3): broken" in by_name["fails"]["reason"]
    assert "exit code 127" in by_name["missing"]["reason"]  # the shell's own words
    assert "not found" in by_name["missing"]["reason"]
    run = json.loads((project.root / ".pipekit/runs" / f"{summary['run_id']}.json").read_text())
    info = {s["name"]: s["info"] for s in run["stages"]}
    assert info["upper"].get("shell") is False  # started without /bin/sh either way
    assert info["shell"].get("shell") is None


def test_starters_end_with_the_run(project: Project) -> None:
    shells(project, {f"s{i}": "tr a-z A-Z < {input} > {output}" for i in range(6)})
    project.run_json("--jobs", "3", env=project.env(PIPEKIT_SHELL_STARTERS="always"))
    assert wait_until(lambda: not starters_in(project.root), 5), starters_in(project.root)


def test_starters_of_a_killed_runner_end_and_leave_its_command_be(
    project: Project, tmp_path: Path
) -> None:
    """SIGKILL to the runner: its starters see the end of their stdin and
    end; the command that was running goes on, as one started by the
    runner itself would."""
    done = tmp_path / "done"
    shells(project, {"slow": f"sleep 1.5; touch {done}; cp {{input}} {{output}}"})
    proc = project.popen("run", env=project.env(PIPEKIT_SHELL_STARTERS="always"))
    with ended_at_last(proc):
        assert wait_until(lambda: bool(starters_in(project.root)), 20)
        time.sleep(0.3)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        assert wait_until(lambda: not starters_in(project.root), 5), starters_in(project.root)
        assert wait_until(done.exists, 10)
    summary = project.run_json()  # the next run does the stage (its temp output was never committed)
    assert project.statuses(summary) == {"slow": "ok"}


def test_a_starter_that_dies_fails_its_stage_and_the_next_gets_a_new_one(
    project: Project,
) -> None:
    shells(
        project,
        {
            "a_kills": "kill -9 $PPID; sleep 1",  # its parent is the starter
            "b_works": "tr a-z A-Z < {input} > {output}",
        },
    )
    env = project.env(PIPEKIT_SHELL_STARTERS="always")
    summary = project.run_json("--keep-going", "--jobs", "1", expect=1, env=env)
    by_name = {s["name"]: s for s in summary["stages"]}
    assert by_name["a_kills"]["status"] == "failed"
    assert "the command starter ended unexpectedly" in by_name["a_kills"]["reason"]
    assert by_name["b_works"]["status"] == "ok"
    assert project.read("b_works.out") == "ABC\n"


@pytest.mark.parametrize("mode", ["auto", "always"])
def test_with_one_job_a_failure_starts_nothing_after_it(project: Project, mode: str) -> None:
    """The next stage is prepared (locked, decided) while the failing one
    runs, and with starters from the first command queued on its starter;
    it must not start once the failure is known."""
    shells(
        project,
        {"a": "sleep 0.3; exit 1", "b": "cp {input} {output}", "c": "cp {input} {output}"},
    )
    summary = project.run_json("--jobs", "1", expect=1, env=project.env(PIPEKIT_SHELL_STARTERS=mode))
    assert project.statuses(summary) == {"a": "failed", "b": "skipped", "c": "skipped"}
    assert not (project.root / "b.out").exists() and not (project.root / "c.out").exists()
    assert project.run_json("--jobs", "1", "-k", expect=1)["status"] == "failed"
    assert project.read("b.out") == "abc\n"  # their locks were let go


def test_an_interrupt_with_a_prepared_stage_ends_the_run(project: Project) -> None:
    shells(project, {f"s{i}": "sleep 30; cp {input} {output}" for i in range(3)})
    env = project.env(PIPEKIT_SHELL_STARTERS="always")
    proc = project.popen("run", "--jobs", "1", "--json", env=env)
    with ended_at_last(proc):
        assert wait_until(lambda: bool(starters_in(project.root)), 20)
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
        "s0": "ok", "s1": "ok", "s2": "ok",
    }


def test_sigterm_to_the_runners_process_group_stops_the_commands_too(
    project: Project, tmp_path: Path
) -> None:
    """A service manager stops a run with SIGTERM to its whole process
    group: the starters are in it, the commands (each in a session of its
    own) are not; a starter that ends so kills its command first."""
    import sys

    marker = tmp_path / "survivor"
    shells(project, {"slow": f"sleep 2 && touch {marker}"})
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipekit", "run"],
        cwd=project.root,
        env=project.env(PIPEKIT_SHELL_STARTERS="always"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    with ended_at_last(proc):
        assert wait_until(lambda: bool(starters_in(project.root)), 20)
        time.sleep(0.4)
        os.killpg(proc.pid, signal.SIGTERM)
        proc.communicate(timeout=20)
    assert proc.returncode == 130
    time.sleep(2.5)
    assert not marker.exists()


def test_a_run_of_few_commands_starts_no_starter_and_a_long_one_does(project: Project) -> None:
    """auto (the default): the first commands of a namespace are started by
    the runner itself; starters come once there are more."""
    shells(project, {"one": "tr a-z A-Z < {input} > {output}"})
    summary = project.run_json("--jobs", "1")
    assert project.statuses(summary) == {"one": "ok"}
    assert not starters_in(project.root)
    shells(project, {f"s{i}": "sleep 0.1; cp {input} {output}" for i in range(12)})
    proc = project.popen("run", "--jobs", "1")
    with ended_at_last(proc):
        seen = wait_until(lambda: bool(starters_in(project.root)), 30)
        assert proc.wait(60) == 0
    assert seen


def test_a_bad_pipekit_shell_starters_value_fails_the_stage_in_words(project: Project) -> None:
    shells(project, {"one": "cp {input} {output}"})
    summary = project.run_json(expect=1, env=project.env(PIPEKIT_SHELL_STARTERS="sometimes"))
    (stage,) = summary["stages"]
    assert "PIPEKIT_SHELL_STARTERS must be 'auto', 'always' or 'off', not 'sometimes'" in stage["reason"]


def test_a_stage_run_by_a_worker_thread_starts_its_command_itself(project: Project) -> None:
    """A stage with retries runs in a worker thread, whose network
    namespaces end with the thread: no starter is made for it."""
    shells(project, {"retried": "sleep 1; cp {input} {output}"}, retry={"attempts": 2})
    env = project.env(PIPEKIT_SHELL_STARTERS="always")
    proc = project.popen("run", env=env)
    with ended_at_last(proc):
        seen = wait_until(lambda: bool(starters_in(project.root)), 2)
        assert proc.wait(60) == 0
    assert not seen
    assert project.read("retried.out") == "abc\n"


def test_a_prepared_stage_does_not_count_its_wait_for_a_slot(project: Project) -> None:
    """With one job the next stage is prepared while the first runs; its
    duration is its own command's, not the first one's too (a prepared
    stage holds its lock for at most PREPARED_HOLD_S, and its wait for a
    slot is not counted either way)."""
    shells(project, {"a_long": "sleep 1; cp {input} {output}", "b_short": "cp {input} {output}"})
    summary = project.run_json("--jobs", "1")
    durations = {s["name"]: s["duration_s"] for s in summary["stages"]}
    assert durations["a_long"] >= 1.0
    assert durations["b_short"] < 0.5, durations


@pytest.mark.parametrize("mode", ["auto", "always"])
def test_a_stage_prepared_behind_a_long_command_is_left_to_another_runner(
    project: Project, mode: str
) -> None:
    """A prepared stage (with starters from the first command: one queued on
    the running command's starter) lets go of its lock after a short wait:
    a second runner with a free slot runs it meanwhile instead of waiting
    for the first runner's long command to end."""
    shells(project, {"a_long": "sleep 4; cp {input} {output}", "b_short": "cp {input} {output}"})
    first = project.popen(
        "run", "--jobs", "1", "--json", env=project.env(PIPEKIT_SHELL_STARTERS=mode)
    )
    with ended_at_last(first):
        assert wait_until(lambda: (project.root / ".pipekit" / "locks").exists(), 20)
        time.sleep(0.8)  # a_long runs; b_short was prepared and let go
        second = project.run_json("--jobs", "1", expect=0)  # waits for a_long's lock, then skips it
        out, err = first.communicate(timeout=30)
    assert first.returncode == 0, err
    ran_second = {s["name"]: s for s in second["stages"]}
    ran_first = {s["name"]: s for s in json.loads(out)["stages"]}
    assert ran_second["b_short"]["reason"] == "never run", ran_second  # the second ran it
    assert ran_first["b_short"]["reason"].startswith("up to date (done by run"), ran_first
    assert ran_first["a_long"]["reason"] == "never run"
    b = (project.root / "b_short.out").stat().st_mtime
    a = (project.root / "a_long.out").stat().st_mtime
    assert b < a - 2, (b, a)  # while a_long still ran
