"""The scheduler's rules, held with real runner processes: a run never ends
`ok` while a stage it was asked to make up to date is unresolved."""

from __future__ import annotations

import json
import os
import time

import pytest
from conftest import Project, write_toml


def _write(project: Project, file: str, stages: list[dict]) -> None:
    write_toml(project.root / file, {"name": "shared", "stages": stages})


X = {
    "name": "x",
    "uses": "shell",
    "inputs": ["in.txt"],
    "outputs": ["x.txt"],
    "params": {"cmd": "touch x.started && sleep 1.5 && cp {input} {output}"},
}
Y = {
    "name": "y",
    "uses": "shell",
    "inputs": ["x.txt"],
    "outputs": ["y.txt"],
    "params": {"cmd": "cp {input} {output}"},
}


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_a_stage_deferred_for_its_lock_and_done_elsewhere_lets_its_dependents_run(
    project: Project, jobs: str
) -> None:
    """Issue 20 item 1: runner A runs `x`; runner B's pipeline is `x -> y`.
    B finds x's lock taken, waits, then finds x done by A: y must still run
    in B (it used to end `ok` with y "not run" and no y.txt)."""
    project.write("in.txt", "data\n")
    _write(project, "a.toml", [X])
    _write(project, "b.toml", [X, Y])
    a = project.popen("run", "-f", "a.toml", "--json")
    deadline = time.monotonic() + 60
    # B starts once A is at work on x (holding its lock)
    while not (project.root / "x.started").exists():
        assert a.poll() is None, a.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.02)
    b = project.popen("run", "-f", "b.toml", "--json", "--jobs", jobs)
    out_b, err_b = b.communicate(timeout=120)
    out_a, err_a = a.communicate(timeout=120)
    assert a.returncode == 0, err_a
    assert b.returncode == 0, err_b
    summary = json.loads(out_b)
    statuses = {s["name"]: (s["status"], s["reason"]) for s in summary["stages"]}
    assert statuses["x"][0] == "skipped", statuses
    assert statuses["y"][0] == "ok", statuses
    assert project.read("y.txt") == "data\n"


def test_a_runner_waits_past_its_lock_timeout_for_a_holder_that_is_alive(
    project: Project,
) -> None:
    """Issue 20 item 6: runner B waits for a stage that runner A is working
    on, past B's --lock-timeout, because A is alive (it used to fail with
    exit 3 after the timeout); then B finds the stage done."""
    project.write("in.txt", "data\n")
    slow = dict(X, params={"cmd": "touch x.started && sleep 4 && cp {input} {output}"})
    _write(project, "pipekit.toml", [slow, Y])
    a = project.popen("run", "--json")
    deadline = time.monotonic() + 60
    while not (project.root / "x.started").exists():
        assert a.poll() is None, a.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.02)
    b = project.popen("run", "--json", "--lock-timeout", "1")
    out_b, err_b = b.communicate(timeout=120)
    out_a, err_a = a.communicate(timeout=120)
    assert a.returncode == 0, err_a
    assert b.returncode == 0, err_b
    assert "alive and at work: waiting on" in err_b
    statuses = {s["name"]: s["status"] for s in json.loads(out_b)["stages"]}
    assert statuses["x"] == "skipped"
    assert project.read("x.txt") == "data\n"


def test_a_temporary_output_replaced_by_a_symlink_is_not_committed(project: Project) -> None:
    """The commit renames only regular files into place: a symlink left at
    a temporary output's name (an attacker's swap) fails the stage, and no
    output appears under its final name."""
    secret = project.write("secret.txt", "do not publish\n")
    project.pipeline(
        [{"name": "s", "uses": "symlink-out", "inputs": ["secret.txt"], "outputs": ["out.txt"]}]
    )
    summary = project.run_json(expect=1)
    (stage,) = summary["stages"]
    assert stage["status"] == "failed"
    assert "not a regular file" in stage["reason"], stage
    assert not os.path.lexists(project.root / "out.txt")
    assert secret.read_text() == "do not publish\n"
