"""Stages whose processor implements ``Stage.start``: the stage's worker
thread starts the work and waits for it (``Started.wait``); a processor
whose ``start`` returns None is run with ``run()`` in the same thread."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import Project


def run_record(project: Project, summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    run = json.loads((project.root / ".pipekit/runs" / f"{summary['run_id']}.json").read_text())
    return {s["name"]: s for s in run["stages"]}


def copies(project: Project, n: int, **params: Any) -> None:
    stages = []
    for i in range(n):
        project.write(f"in/{i}.txt", f"line {i}\n")
        stages.append(
            {
                "name": f"c{i}",
                "uses": "started-copy",
                "inputs": [f"in/{i}.txt"],
                "outputs": [f"out/{i}.txt"],
                "params": params,
            }
        )
    project.pipeline(stages)


def test_a_started_stage_is_started_waited_for_and_finished_by_its_worker_thread(
    project: Project,
) -> None:
    copies(project, 6)
    summary = project.run_json("--jobs", "2")
    assert set(project.statuses(summary).values()) == {"ok"}
    for name, stage in run_record(project, summary).items():
        info = stage["info"]
        assert info["started_in"].startswith("pipekit-stage"), (name, info)
        assert info["finished_in"] == info["started_in"], (name, info)
        assert "ran_in" not in info  # run() was never called
        assert info["polls"] == 2  # the byte, then the end: woken by the descriptor only
    for i in range(6):
        assert project.read(f"out/{i}.txt") == f"line {i}\n"
    again = project.run_json("--jobs", "2")
    assert set(project.statuses(again).values()) == {"skipped"}


def test_a_declined_start_runs_in_a_worker_thread_announced_once(project: Project) -> None:
    copies(project, 2, decline=True)
    log = project.root / "observed.jsonl"
    env = project.env(PIPEKIT_OBSERVER_LOG=str(log))
    env["PIPEKIT_PLUGIN_MODULES"] += ",pipekit_observer"
    summary = project.run_json("--jobs", "2", env=env)
    assert set(project.statuses(summary).values()) == {"ok"}
    for stage in run_record(project, summary).values():
        assert stage["info"]["ran_in"].startswith("pipekit-stage")
        assert "started_in" not in stage["info"]
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    starts = sorted(e["stage"] for e in entries if e["hook"] == "on_stage_start")
    assert starts == ["c0", "c1"]


@pytest.mark.parametrize("which", ["fail_start", "fail_finish"])
def test_a_start_or_finish_that_raises_fails_the_stage_and_leaves_no_output(
    project: Project, which: str
) -> None:
    copies(project, 1, **{which: True})
    summary = project.run_json(expect=1)
    (stage,) = summary["stages"]
    word = "start" if which == "fail_start" else "finish"
    assert stage["status"] == "failed"
    assert stage["reason"] == f"failed after 1 attempt(s): {word} said no"
    out = project.root / "out"
    assert not out.exists() or list(out.iterdir()) == []  # no output, no temp file
    # the lock was released: the fixed stage runs at once
    copies(project, 1)
    assert project.statuses(project.run_json("--lock-timeout", "1")) == {"c0": "ok"}


def shell(project: Project, stages: dict[str, str], **extra: Any) -> None:
    project.pipeline(
        [
            {
                "name": name,
                "uses": "shell",
                "outputs": [f"{name}.out"],
                "params": {"cmd": cmd},
                **extra,
            }
            for name, cmd in stages.items()
        ]
    )


def test_a_command_that_fills_its_stderr_pipe_does_not_stall(project: Project) -> None:
    shell(
        project,
        {
            "loud": "python3 -c \"import sys; sys.stderr.write('e' * 300000 + 'END')\" "
            "&& echo done > {output}",
        },
    )
    summary = project.run_json()
    assert project.statuses(summary) == {"loud": "ok"}
    info = run_record(project, summary)["loud"]["info"]
    assert info["stderr"].endswith("eeeEND")
    assert len(info["stderr"]) == 4000


def test_a_command_that_closes_stderr_and_goes_on_is_waited_for(project: Project) -> None:
    shell(project, {"late": "exec 2>&-; sleep 0.5; echo late > {output}"})
    t0 = time.monotonic()
    summary = project.run_json()
    assert project.statuses(summary) == {"late": "ok"}
    assert time.monotonic() - t0 >= 0.5
    assert project.read("late.out") == "late\n"


def test_a_started_command_past_its_timeout_is_killed_with_its_group(
    project: Project, tmp_path: Path
) -> None:
    marker = tmp_path / "survivor"
    shell(
        project,
        {"slow": f"(sleep 2; touch {marker}) & sleep 30; echo no > {{output}}"},
        timeout=0.5,
    )
    t0 = time.monotonic()
    summary = project.run_json(expect=1)
    took = time.monotonic() - t0
    (stage,) = summary["stages"]
    assert "ran past the stage's timeout of 0.5s and was killed" in stage["reason"]
    assert took < 10
    time.sleep(2.5)
    assert not marker.exists()  # its background child went with it
    assert not (project.root / "slow.out").exists()


def test_two_commands_running_at_once_each_answer_for_their_own_network_use(
    project: Project,
) -> None:
    reach = (
        'python3 -c "import socket; s = socket.socket(); s.settimeout(1)\n'
        "try: s.connect(('10.255.255.1', 9))\nexcept OSError: pass\" ; sleep 0.3"
    )
    stages = {f"quiet{i}": "sleep 0.4; echo ok > {output}" for i in range(3)}
    stages["reach"] = reach + "; echo ok > {output}"
    shell(project, stages)
    summary = project.run_json("--jobs", "4", "--keep-going", expect=1)
    statuses = project.statuses(summary)
    assert statuses == {"quiet0": "ok", "quiet1": "ok", "quiet2": "ok", "reach": "failed"}
    assert "tried to reach the network" in project.reasons(summary)["reach"]


def test_jobs_bounds_started_and_threaded_stages_together(project: Project) -> None:
    """--jobs 1: a started stage (shell) and a worker thread's (sleep) never
    run at once, whichever comes first."""
    project.write("in.txt", "x\n")
    project.pipeline(
        [
            {
                "name": "a",
                "uses": "shell",
                "outputs": ["a.out"],
                "params": {"cmd": "sleep 0.6; echo a > {output}"},
            },
            {
                "name": "b",
                "uses": "sleep",
                "inputs": ["in.txt"],
                "outputs": ["b.out"],
                "params": {"seconds": 0.6},
            },
        ]
    )
    t0 = time.monotonic()
    summary = project.run_json("--jobs", "1")
    assert set(project.statuses(summary).values()) == {"ok"}
    assert time.monotonic() - t0 >= 1.2


@pytest.fixture
def tmpfs_project(tmp_path: Path) -> Any:
    """A project on /dev/shm (a tmpfs: quick fsyncs), or a skip."""
    import shutil
    import tempfile

    shm = Path("/dev/shm")
    if not shm.is_dir() or not os.access(shm, os.W_OK):
        pytest.skip("no writable /dev/shm")
    root = Path(tempfile.mkdtemp(prefix="pipekit-test-", dir=shm))
    try:
        (root / "p").mkdir()
        yield Project(root / "p")
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize("where", ["list", "put_many"])
def test_a_signal_during_a_commit_ends_the_run(
    tmpfs_project: Project, tmp_path: Path, where: str
) -> None:
    """SIGTERM while the committer commits a started stage (here
    while it writes the idempotency records, or lists the checkpoints, in
    a store that takes 3 s for it): the run ends with 130, it does not wait
    for a commit that will never finish, and the next run completes."""
    import signal
    import subprocess

    project = tmpfs_project
    copies(project, 1)
    log = tmp_path / "slow.log"
    slow = "PIPEKIT_TEST_SLOW_LIST" if where == "list" else "PIPEKIT_TEST_SLOW_PUT"
    env = project.env(PIPEKIT_TEST_SLOW_S="3", PIPEKIT_TEST_SLOW_LOG=str(log))
    env[slow] = "1"
    env["PIPEKIT_PLUGIN_MODULES"] += ",pipekit_slowbackend"
    proc = project.popen("run", "--json", "--backend", "slowfile", env=env)
    deadline = time.monotonic() + 30
    while f"begin {where}" not in (log.read_text() if log.exists() else ""):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    try:
        out, err = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise AssertionError("the run hung after SIGTERM during a commit") from None
    assert proc.returncode == 130, err
    assert json.loads(out)["status"] == "interrupted"
    assert "Traceback" not in err
    env.pop(slow)
    summary = project.run_json("--backend", "slowfile", env=env)
    assert summary["status"] == "ok"
    assert project.read("out/0.txt") == "line 0\n"


def test_commands_one_after_another_in_a_slot_each_answer_for_their_own_network_use(
    project: Project,
) -> None:
    """With one job, every command runs in the same namespace, one after
    another, and a command's closing count opens the next one's: the
    command after one that tried to reach the network is not blamed for
    it, and the one before is not either. (The runner takes a command's
    closing count before it starts the next, prepared meanwhile; that order
    is not shown here: the next command takes longer to start than the gap
    a wrong order would leave.)"""
    reach = (
        'python3 -c "import socket; s = socket.socket(); s.settimeout(1)\n'
        "try: s.connect(('10.255.255.1', 9))\nexcept OSError: pass\" ; sleep 0.2"
    )
    shell(
        project,
        {
            "a_quiet": "sleep 0.3; echo ok > {output}",
            "b_reach": reach + "; echo ok > {output}",
            "c_quiet": "echo ok > {output}",
            "d_quiet": "sleep 0.2; echo ok > {output}",
        },
    )
    summary = project.run_json("--jobs", "1", "--keep-going", expect=1)
    assert project.statuses(summary) == {
        "a_quiet": "ok",
        "b_reach": "failed",
        "c_quiet": "ok",
        "d_quiet": "ok",
    }
    assert "tried to reach the network" in project.reasons(summary)["b_reach"]
