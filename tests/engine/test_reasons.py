"""The reason a stage would run, or runs, says what really happened
(issue 20, "Smaller")."""

from __future__ import annotations

import json

from conftest import Project


def _reasons_of_status(project: Project) -> dict[str, str]:
    proc = project.cli("status", "--json")
    assert proc.returncode == 0, proc.stderr
    return {s["name"]: s["reason"] for s in json.loads(proc.stdout)["stages"]}


def test_after_a_failed_run_the_reason_is_that_it_did_not_finish(project: Project) -> None:
    project.write("in.txt", "x\n")
    project.pipeline(
        [
            {
                "name": "s",
                "uses": "shell",
                "inputs": ["in.txt"],
                "outputs": ["o.txt"],
                "params": {"cmd": "exit 3"},
            }
        ]
    )
    project.run_json(expect=1)
    assert "did not finish" in _reasons_of_status(project)["s"]


def test_after_an_input_is_reverted_the_reason_is_the_input(project: Project) -> None:
    project.write("in.txt", "one\n")
    project.pipeline(
        [
            {
                "name": "s",
                "uses": "shell",
                "inputs": ["in.txt"],
                "outputs": ["o.txt"],
                "params": {"cmd": "cp {input} {output}"},
            }
        ]
    )
    project.run_json()
    project.write("in.txt", "two\n", age=5)
    project.run_json()
    project.write("in.txt", "one\n", age=3)
    reason = project.reasons(project.run_json())["s"]
    assert reason.startswith("input 'in.txt' changed"), reason
    assert project.read("o.txt") == "one\n"


def test_a_stage_resumed_after_an_interrupt_says_its_last_run_did_not_finish(
    project: Project, tmp_path
) -> None:
    import signal
    import time

    marker = tmp_path / "started"
    project.write("in.txt", "".join(f"line {i}\n" for i in range(20_000)))
    project.pipeline(
        [
            {
                "name": "r",
                "uses": "slow-upper",
                "inputs": ["in.txt"],
                "outputs": ["o.txt"],
                "params": {"sleep_every": 100, "sleep_s": 0.01, "marker": str(marker)},
                "checkpoint": {"every_records": 500},
            }
        ]
    )
    proc = project.popen("run", "--json")
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.02)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "did not finish" in _reasons_of_status(project)["r"]
    summary = project.run_json()
    assert "did not finish" in project.reasons(summary)["r"]
