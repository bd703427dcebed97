"""Retries, timeouts, parallel jobs, lock timeouts, interrupts, exit codes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

from conftest import Project


def test_retry_with_backoff_then_success(project: Project) -> None:
    project.write("in.txt", "x\n")
    counter = project.root / "count"
    project.pipeline(
        [
            {
                "name": "flaky",
                "uses": "flaky",
                "inputs": ["in.txt"],
                "outputs": ["out.txt"],
                "params": {"counter": str(counter), "fail_times": 2},
                "retry": {"attempts": 3, "backoff": 0.2, "jitter": 0.0},
            }
        ]
    )
    summary = project.run_json()
    assert summary["status"] == "ok"
    assert counter.read_text() == "3"
    times = [float(t) for t in open(str(counter) + ".times")]
    waits = [b - a for a, b in zip(times, times[1:])]
    assert waits[0] >= 0.2 and waits[1] >= 0.4, waits  # exponential backoff
    run = json.loads((project.root / ".pipekit/runs" / f"{summary['run_id']}.json").read_text())
    assert run["stages"][0]["attempts"] == 3


def test_retries_exhausted_fail_the_stage_with_exit_1(project: Project) -> None:
    project.write("in.txt", "x\n")
    counter = project.root / "count"
    project.pipeline(
        [
            {
                "name": "flaky",
                "uses": "flaky",
                "inputs": ["in.txt"],
                "outputs": ["mid.txt"],
                "params": {"counter": str(counter), "fail_times": 5},
                "retry": {"attempts": 2, "backoff": 0.0, "jitter": 0.0},
            },
            {"name": "after", "uses": "upper", "inputs": ["mid.txt"], "outputs": ["out.txt"]},
        ]
    )
    proc = project.cli("run", "--json")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["status"] == "failed"
    st = {s["name"]: s for s in summary["stages"]}
    assert st["flaky"]["status"] == "failed"
    assert "transient failure 2" in st["flaky"]["reason"]
    assert st["after"]["status"] == "skipped" and "upstream" in st["after"]["reason"]
    assert counter.read_text() == "2"
    assert not (project.root / "mid.txt").exists()


def test_non_retryable_error_is_not_retried(project: Project) -> None:
    project.write("in.txt", "x\n")
    counter = project.root / "count"
    project.pipeline(
        [
            {
                "name": "flaky",
                "uses": "flaky",
                "inputs": ["in.txt"],
                "outputs": ["out.txt"],
                "params": {"counter": str(counter), "fail_times": 5, "non_retryable": True},
                "retry": {"attempts": 5, "backoff": 0.0},
            }
        ]
    )
    proc = project.cli("run", "--json")
    assert proc.returncode == 1
    assert counter.read_text() == "1"


def test_timeout_really_stops_a_python_processor(project: Project) -> None:
    project.write("in.txt", "x\n")
    marker = project.root / "finished"
    project.pipeline(
        [
            {
                "name": "slow",
                "uses": "sleep",
                "inputs": ["in.txt"],
                "outputs": ["out.txt"],
                "params": {"seconds": 6.0, "marker": str(marker)},
                "timeout": 0.5,
            }
        ]
    )
    t0 = time.monotonic()
    proc = project.cli("run", "--json")
    elapsed = time.monotonic() - t0
    assert proc.returncode == 1
    summary = json.loads(proc.stdout)
    assert "timeout of 0.5s" in summary["stages"][0]["reason"]
    assert elapsed < 6.0  # the run did not wait for the work (a busy machine has seconds to spare)
    time.sleep(6.5 - elapsed)
    assert not marker.exists(), "the timed-out work went on running"
    assert not (project.root / "out.txt").exists()


def test_timeout_kills_a_shell_command_and_its_children(project: Project) -> None:
    project.write("in.txt", "x\n")
    marker = project.root / "finished"
    project.pipeline(
        [
            {
                "name": "slow",
                "uses": "shell",
                "inputs": ["in.txt"],
                "outputs": ["out.txt"],
                "params": {
                    "cmd": f"(sleep 1.5; touch {marker}) & sleep 1.5; cp {{input}} {{output}}"
                },
                "timeout": 0.3,
            }
        ]
    )
    proc = project.cli("run", "--json")
    assert proc.returncode == 1
    assert "timeout of 0.3s" in json.loads(proc.stdout)["stages"][0]["reason"]
    time.sleep(1.8)
    assert not marker.exists(), "a child of the timed-out command survived"


def test_independent_stages_run_in_parallel_with_jobs(project: Project) -> None:
    """With --jobs 4, four independent stages are running at one moment:
    each waits (60 s at most, then fails) until all four have started,
    which only a run holding them at once lets happen, however slow."""
    project.write("in.txt", "x\n")
    wait_for_all = (
        "touch started-{stage}; n=0; "
        "while [ $(ls started-* | wc -l) -lt 4 ]; do n=$((n+1)); "
        "[ $n -gt 1200 ] && exit 1; sleep 0.05; done; cp {input} {output}"
    )
    stages = [{"name": f"s{i}", "uses": "shell", "inputs": ["in.txt"], "outputs": [f"o{i}.txt"],
               "params": {"cmd": wait_for_all}} for i in range(4)]  # fmt: skip
    project.pipeline(stages)
    summary = project.run_json("--jobs", "4")
    assert set(project.statuses(summary).values()) == {"ok"}


def test_a_lock_whose_holder_is_gone_gives_exit_3_naming_the_holder(project: Project) -> None:
    """Past --lock-timeout a runner gives up on a lock whose holder is gone
    (here: the lock file names a process of this host that no longer runs,
    while the OS lock is still held), naming it; a holder that is alive is
    waited for (tests/engine/test_scheduler_rules.py)."""
    from pipekit.stores._file_lock import FileLockBackend

    project.write("in.txt", "x\n")
    project.pipeline([{"name": "u", "uses": "upper", "inputs": ["in.txt"], "outputs": ["out.txt"]}])
    dead = subprocess.Popen(["true"])
    dead.wait()
    backend = FileLockBackend(project.root / ".pipekit" / "locks")
    lease = backend.lock("stage/proj/u")
    assert lease.acquire(timeout=0)
    lock_files = [p for p in (project.root / ".pipekit" / "locks").rglob("*") if p.is_file()]
    for path in lock_files:
        text = path.read_text()
        if f"pid {os.getpid()}" in text:
            path.write_text(text.replace(f"pid {os.getpid()}", f"pid {dead.pid}"))
    try:
        proc = project.cli("run", "--json", "--lock-timeout", "0.5")
    finally:
        lease.release()
    assert proc.returncode == 3, proc.stderr
    reason = json.loads(proc.stdout)["stages"][0]["reason"]
    assert f"pid {dead.pid}" in reason and "gone" in reason, reason
    assert project.run_json()["status"] == "ok"


def test_sigint_stops_and_the_next_run_finishes(project: Project) -> None:
    project.write("in.txt", "x\n")
    project.pipeline(
        [
            {
                "name": "long",
                "uses": "shell",
                "inputs": ["in.txt"],
                "outputs": ["out.txt"],
                "params": {"cmd": "touch started; sleep 30; cp {input} {output}"},
            },
        ]
    )
    proc = project.popen("run", "--json")
    deadline = time.monotonic() + 60
    while not (project.root / "started").exists():  # the command runs: so does the runner's handler
        assert time.monotonic() < deadline and proc.poll() is None, "the command never started"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 130, err
    assert json.loads(out)["status"] == "interrupted"
    assert "run the same command again" in err
    assert "Traceback" not in err
    project.pipeline(
        [
            {
                "name": "long",
                "uses": "shell",
                "inputs": ["in.txt"],
                "outputs": ["out.txt"],
                "params": {"cmd": "cp {input} {output}"},
            },
        ]
    )
    assert project.run_json()["status"] == "ok"


def test_shell_failure_keeps_stderr_in_the_run_record(project: Project) -> None:
    project.write("in.txt", "x\n")
    project.pipeline(
        [
            {
                "name": "bad",
                "uses": "shell",
                "inputs": ["in.txt"],
                "outputs": ["out.txt"],
                "params": {"cmd": "echo oh no >&2; exit 7"},
            }
        ]
    )
    proc = project.cli("run", "--json")
    assert proc.returncode == 1
    summary = json.loads(proc.stdout)
    assert "exit code 7" in summary["stages"][0]["reason"]
    run = json.loads((project.root / ".pipekit/runs" / f"{summary['run_id']}.json").read_text())
    assert "oh no" in run["stages"][0]["info"]["stderr"]


def test_keep_going_runs_independent_stages_after_a_failure(project: Project) -> None:
    project.write("in.txt", "x\n")
    project.pipeline(
        [
            {
                "name": "bad",
                "uses": "shell",
                "inputs": ["in.txt"],
                "outputs": ["bad.txt"],
                "params": {"cmd": "exit 1"},
            },
            {"name": "good", "uses": "upper", "inputs": ["in.txt"], "outputs": ["good.txt"]},
        ]
    )
    stopped = json.loads(project.cli("run", "--json").stdout)
    assert {s["name"]: s["status"] for s in stopped["stages"]} == {
        "bad": "failed",
        "good": "skipped",
    }
    going = json.loads(project.cli("run", "--json", "-k").stdout)
    assert {s["name"]: s["status"] for s in going["stages"]} == {"bad": "failed", "good": "ok"}


def test_run_id_names_the_run_once(project: Project) -> None:
    project.write("in.txt", "x\n")
    project.pipeline(
        [
            {
                "name": "s",
                "uses": "shell",
                "inputs": ["in.txt"],
                "outputs": ["out.txt"],
                "params": {"cmd": "echo {run_id} > {output}"},
            }
        ]
    )
    summary = project.run_json("--run-id", "nightly-2026.12.07")
    assert summary["run_id"] == "nightly-2026.12.07"
    assert project.read("out.txt") == "nightly-2026.12.07\n"
    assert (project.root / ".pipekit/runs/nightly-2026.12.07.json").exists()
    again = project.cli("run", "--run-id", "nightly-2026.12.07")
    assert again.returncode == 2 and "recorded already" in again.stderr, again.stderr
    for bad in ("../escape", ".hidden", "", "a" * 65, "spaced id"):
        proc = project.cli("run", "--run-id", bad)
        assert proc.returncode == 2 and "--run-id" in proc.stderr, (bad, proc.stderr)
        assert "Traceback" not in proc.stderr


def test_a_processors_traceback_is_kept_and_shown_with_verbose(project: Project) -> None:
    project.write("in.txt", "x\n")
    project.pipeline(
        [
            {
                "name": "buggy",
                "uses": "flaky",
                "inputs": ["in.txt"],
                "outputs": ["out.txt"],
                "params": {"counter": str(project.root / "count"), "fail_times": 5},
                "retry": {"attempts": 1},
            }
        ]
    )
    quiet = project.cli("run", "--json")
    assert quiet.returncode == 1
    summary = json.loads(quiet.stdout)
    assert "Traceback" not in quiet.stderr
    run = json.loads((project.root / ".pipekit/runs" / f"{summary['run_id']}.json").read_text())
    trace = run["stages"][0]["info"]["traceback"]
    assert "pipekit_testplugin.py" in trace and "RuntimeError: transient failure 1" in trace
    verbose = project.cli("run", "-v")
    assert verbose.returncode == 1
    assert "RuntimeError: transient failure 2" in verbose.stderr
    assert "pipekit_testplugin.py" in verbose.stderr, verbose.stderr
