"""Bugs found in review, each with the test that failed before its fix."""

from __future__ import annotations

import json
import os
import time

from conftest import Project


def test_shell_stdout_does_not_break_json_output(project: Project) -> None:
    project.write("in.txt", "x\n")
    project.pipeline(
        [
            {
                "name": "s",
                "uses": "shell",
                "inputs": ["in.txt"],
                "outputs": ["out.txt"],
                "params": {"cmd": "echo to-stdout; cp {input} {output}"},
            }
        ]
    )
    proc = project.cli("run", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["status"] == "ok"
    assert "to-stdout" in proc.stderr


def test_non_retryable_in_a_record_stage_is_not_retried(project: Project) -> None:
    project.write("in.txt", "ok\nfatal\n")
    calls = project.root / "calls"
    project.pipeline(
        [
            {
                "name": "r",
                "uses": "record-fatal",
                "inputs": ["in.txt"],
                "outputs": ["out.txt"],
                "params": {"calls": str(calls)},
                "retry": {"attempts": 3, "backoff": 0.0, "jitter": 0.0},
            }
        ]
    )
    proc = project.cli("run", "--json")
    assert proc.returncode == 1
    assert calls.read_text() == "ok\nfatal\n"  # one attempt only
    assert "can never succeed" in json.loads(proc.stdout)["stages"][0]["reason"]


def test_shell_accepts_indexed_placeholders_beyond_the_first(project: Project) -> None:
    project.write("a.txt", "a\n")
    project.write("b.txt", "b\n")
    project.pipeline(
        [
            {
                "name": "s",
                "uses": "shell",
                "inputs": ["a.txt", "b.txt"],
                "outputs": ["o1.txt", "o2.txt"],
                "params": {"cmd": "cp {inputs[1]} {outputs[0]}; cp {inputs[0]} {outputs[1]}"},
            }
        ]
    )
    assert project.run_json()["status"] == "ok"
    assert project.read("o1.txt") == "b\n" and project.read("o2.txt") == "a\n"


def test_shell_index_out_of_range_fails_clearly_without_retry(project: Project) -> None:
    project.write("a.txt", "a\n")
    project.pipeline(
        [
            {
                "name": "s",
                "uses": "shell",
                "inputs": ["a.txt"],
                "outputs": ["o.txt"],
                "params": {"cmd": "cp {inputs[3]} {output}"},
                "retry": {"attempts": 3, "backoff": 0.0},
            }
        ]
    )
    proc = project.cli("run", "--json")
    assert proc.returncode == 1
    reason = json.loads(proc.stdout)["stages"][0]["reason"]
    assert "cannot fill the command template" in reason and "1 input(s)" in reason
    assert "failed after 1 attempt" in reason


def test_shell_unknown_placeholder_is_a_config_error(project: Project) -> None:
    project.write("a.txt", "a\n")
    project.pipeline(
        [
            {
                "name": "s",
                "uses": "shell",
                "inputs": ["a.txt"],
                "outputs": ["o.txt"],
                "params": {"cmd": "cp {inptus} {output}"},
            }
        ]
    )
    proc = project.cli("run")
    assert proc.returncode == 2
    assert "unknown placeholder {inptus}" in proc.stderr


def test_set_typed_params_have_a_canonical_form(project: Project) -> None:
    project.write("in.txt", "x\n")
    stages = [
        {
            "name": "t",
            "uses": "tagged",
            "inputs": ["in.txt"],
            "outputs": ["out.txt"],
            "params": {"tags": ["b", "a"]},
        }
    ]
    project.pipeline(stages)
    assert project.run_json()["status"] == "ok"
    assert project.read("out.txt") == "x a,b\n"
    stages[0]["params"] = {"tags": ["a", "b"]}  # same set, other order
    project.pipeline(stages)
    assert project.statuses(project.run_json()) == {"t": "skipped"}


def test_stage_checkpoint_is_kept_across_attempts_and_cleared_on_commit(project: Project) -> None:
    project.write("in.txt", "x\n")
    project.pipeline(
        [
            {
                "name": "r",
                "uses": "resumable",
                "inputs": ["in.txt"],
                "outputs": ["out.txt"],
                "retry": {"attempts": 2, "backoff": 0.0},
            }
        ]
    )
    assert project.run_json()["status"] == "ok"
    assert project.read("out.txt") == "loaded={'done_part': 1}\n"
    assert not any((project.root / ".pipekit" / "checkpoints").rglob("stage"))
    # the commit cleared the checkpoint: a forced run starts from nothing,
    # saves, fails once, then resumes from it on its second attempt
    forced = project.run_json("--force", "r")
    run = json.loads((project.root / ".pipekit/runs" / f"{forced['run_id']}.json").read_text())
    assert run["stages"][0]["attempts"] == 2


def test_observers_see_skipped_stages_and_decoded_records(project: Project) -> None:
    log = project.root / "observed.jsonl"
    env = project.env(PIPEKIT_OBSERVER_LOG=str(log))
    env["PIPEKIT_PLUGIN_MODULES"] += ",pipekit_observer"
    project.write("in.txt", "fine\nboom here\n")
    project.pipeline(
        [
            {"name": "u", "uses": "upper", "inputs": ["in.txt"], "outputs": ["u.txt"]},
            {"name": "b", "uses": "record-boom", "inputs": ["in.txt"], "outputs": ["b.txt"]},
        ]
    )
    project.cli("run", env=env)
    project.cli("run", env=env)
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    ends = [(e["stage"], e["status"]) for e in entries if e["hook"] == "on_stage_end"]
    assert ("u", "ok") in ends and ("u", "skipped") in ends
    failed = [e for e in entries if e["hook"] == "on_record_failed"]
    assert failed and failed[0]["record"] == "boom here" and failed[0]["type"] == "str"


def test_deleted_source_input_is_a_config_error_even_with_a_cached_plan(project: Project) -> None:
    project.write("in.txt", "x\n")
    project.pipeline([{"name": "u", "uses": "upper", "inputs": ["in.txt"], "outputs": ["out.txt"]}])
    os.utime(project.file, (time.time() - 10, time.time() - 10))
    project.run_json()
    project.run_json()
    os.unlink(project.root / "in.txt")
    proc = project.cli("run")
    assert proc.returncode == 2, proc.stderr
    assert "'in.txt' does not exist and no stage produces it" in proc.stderr


def test_the_pipekit_script_and_python_m_pipekit_share_one_cached_plan(project: Project) -> None:
    import subprocess
    import sys
    from pathlib import Path

    script = Path(sys.executable).parent / "pipekit"
    assert script.exists(), "the pipekit script is installed beside the interpreter"
    project.write("in.txt", "x\n")
    project.pipeline([{"name": "u", "uses": "upper", "inputs": ["in.txt"], "outputs": ["out.txt"]}])
    os.utime(project.file, (time.time() - 10, time.time() - 10))
    assert project.cli("run").returncode == 0  # python -m pipekit: caches the plan
    proc = subprocess.run(
        [str(script), "-vv", "run"],
        cwd=project.root,
        env=project.env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "plan cache: using" in proc.stderr, proc.stderr


def test_status_and_dry_run_use_the_cached_plan(project: Project) -> None:
    project.write("in.txt", "x\n")
    project.pipeline([{"name": "u", "uses": "upper", "inputs": ["in.txt"], "outputs": ["out.txt"]}])
    os.utime(project.file, (time.time() - 10, time.time() - 10))
    project.run_json()
    os.chmod(project.file, 0)  # only the cached plan can answer now
    try:
        status = project.cli("status", "--json")
        dry = project.cli("run", "--dry-run")
    finally:
        os.chmod(project.file, 0o644)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["stages"][0]["status"] == "up-to-date"
    assert dry.returncode == 0, dry.stderr
