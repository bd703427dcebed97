"""Run records: written as the run goes (a killed run leaves one), times in
ISO 8601 UTC, where each stage ran, the newest kept by start time."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import time
from pathlib import Path
from typing import Any

from conftest import Project
from pipekit.state._run_records import write_run_record

ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def journal_lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def test_a_killed_run_leaves_its_record_with_the_stages_that_ended(project: Project) -> None:
    project.write("in.txt", "x\n")
    project.pipeline(
        [
            {
                "name": "first",
                "uses": "shell",
                "inputs": ["in.txt"],
                "outputs": ["first.txt"],
                "params": {"cmd": "cp {input} {output}"},
            },
            # waits for a file nobody makes: the run is killed while it waits
            {
                "name": "second",
                "uses": "shell",
                "inputs": ["first.txt"],
                "outputs": ["second.txt"],
                "params": {"cmd": "while [ ! -e never ]; do sleep 0.05; done; cp {input} {output}"},
            },
        ]
    )
    proc = project.popen("run", "--run-id", "doomed", start_new_session=True)
    journal = project.root / ".pipekit/runs/doomed.jsonl"
    deadline = time.monotonic() + 60
    try:
        while not any(line.get("name") == "first" for line in journal_lines(journal)):
            assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # pipekit and its command
        proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    header, *stages = journal_lines(journal)
    assert header["event"] == "start" and header["run_id"] == "doomed"
    assert ISO.fullmatch(header["started_at"]), header
    assert [g["name"] for g in header["graph"]] == ["first", "second"]
    assert [(s["name"], s["status"]) for s in stages] == [("first", "ok")]
    assert ISO.fullmatch(stages[0]["started_at"]) and ISO.fullmatch(stages[0]["ended_at"])
    assert stages[0]["slot"] == 0 and stages[0]["host"] == socket.gethostname()
    assert not (project.root / ".pipekit/runs/doomed.json").exists()

    listed = json.loads(project.cli("runs", "list", "--json").stdout)
    assert [(r["run_id"], r["status"]) for r in listed["runs"]] == [("doomed", "killed")]
    shown = json.loads(project.cli("runs", "show", "doomed", "--json").stdout)
    assert shown["status"] == "killed" and shown["schema_version"] == 1
    assert [s["name"] for s in shown["run"]["stages"]] == ["first"]
    assert project.cli("report", "doomed", "-o", "doomed.html").returncode == 0
    page = project.read("doomed.html")
    assert 'class="node st-not-ended"' in page and 'class="node st-ok"' in page
    # the next run finishes the work, and records itself whole
    project.pipeline(
        [
            {
                "name": "first",
                "uses": "shell",
                "inputs": ["in.txt"],
                "outputs": ["first.txt"],
                "params": {"cmd": "cp {input} {output}"},
            },
            {
                "name": "second",
                "uses": "shell",
                "inputs": ["first.txt"],
                "outputs": ["second.txt"],
                "params": {"cmd": "cp {input} {output}"},
            },
        ]
    )
    summary = project.run_json()
    assert project.statuses(summary) == {"first": "skipped", "second": "ok"}
    runs = project.root / ".pipekit/runs"
    assert sorted(p.name for p in runs.iterdir()) == sorted(
        ["doomed.jsonl", f"{summary['run_id']}.json"]
    )


def test_each_stage_says_when_and_where_it_ran(project: Project) -> None:
    project.write("in.txt", "x\n")
    project.pipeline(
        [
            {
                "name": f"s{i}",
                "uses": "shell",
                "inputs": ["in.txt"],
                "outputs": [f"out{i}.txt"],
                "params": {"cmd": "cp {input} {output}"},
            }
            for i in range(4)
        ]
    )
    summary = project.run_json("-j", "2")
    run = json.loads((project.root / ".pipekit/runs" / f"{summary['run_id']}.json").read_text())
    assert ISO.fullmatch(run["started_at"]) and ISO.fullmatch(run["ended_at"])
    assert run["started_at"] <= run["ended_at"]
    for stage in run["stages"]:
        assert stage["slot"] in (0, 1), stage
        assert stage["host"] == socket.gethostname()
        assert run["started_at"] <= stage["started_at"] <= stage["ended_at"] <= run["ended_at"]
    assert not (project.root / ".pipekit/runs" / f"{summary['run_id']}.jsonl").exists()
    again = project.run_json("-j", "2")  # up to date: decided on the spot, no slot
    rerun = json.loads((project.root / ".pipekit/runs" / f"{again['run_id']}.json").read_text())
    assert {s["status"] for s in rerun["stages"]} == {"skipped"}
    assert all(s["slot"] is None and ISO.fullmatch(s["ended_at"]) for s in rerun["stages"])


def test_the_newest_records_are_kept_by_start_time_not_by_name(tmp_path: Path) -> None:
    started = time.time() - 1000
    # names in the opposite order of their start times
    for i, name in enumerate(["zz-oldest", "yy", "xx", "ww", "aa-newest"]):
        write_run_record(tmp_path, {"run_id": name}, started + i, keep=3)
    kept = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert kept == ["aa-newest.json", "ww.json", "xx.json"]


def test_runs_list_and_show(project: Project) -> None:
    project.write("in.txt", "x\n")
    project.pipeline(
        [
            {
                "name": "good",
                "uses": "shell",
                "inputs": ["in.txt"],
                "outputs": ["good.txt"],
                "params": {"cmd": "cp {input} {output}"},
            },
            {
                "name": "bad",
                "uses": "flaky",
                "inputs": ["good.txt"],
                "outputs": ["bad.txt"],
                "params": {"counter": str(project.root / "count"), "fail_times": 5},
                "retry": {"attempts": 1},
            },
        ]
    )
    first = project.run_json("--run-id", "first", expect=1)
    second = project.run_json("--run-id", "second", expect=1)
    listed = project.cli("runs", "list")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[1].startswith("second") and lines[2].startswith("first"), listed.stdout
    assert "failed" in lines[1] and "1 ok" in lines[2], listed.stdout
    doc = json.loads(project.cli("runs", "list", "--json").stdout)
    assert doc["schema_version"] == 1
    assert [r["run_id"] for r in doc["runs"]] == ["second", "first"]
    assert doc["runs"][0]["counts"] == {"ok": 0, "skipped": 1, "failed": 1}
    assert first["status"] == second["status"] == "failed"

    shown = project.cli("runs", "show")  # latest
    assert shown.returncode == 0, shown.stderr
    assert "run second" in shown.stdout and "bad" in shown.stdout
    assert "Traceback" in shown.stdout  # the processor's error, with its traceback
    assert project.cli("runs", "show", "-q").stdout == ""
    unknown = project.cli("runs", "show", "nope")
    assert unknown.returncode == 2
    assert "no run 'nope'" in unknown.stderr and "second, first" in unknown.stderr
    assert "Traceback (most recent" not in unknown.stderr.split("no run")[0]


def test_runs_on_a_state_folder_without_runs(project: Project) -> None:
    project.pipeline(
        [{"name": "s", "uses": "shell", "outputs": ["o.txt"], "params": {"cmd": "echo > {output}"}}]
    )
    listed = project.cli("runs", "list")
    assert listed.returncode == 0 and "no run" in listed.stdout, listed
    shown = project.cli("runs", "show")
    assert shown.returncode == 2 and "no run is recorded" in shown.stderr


def test_a_stage_entry_has_every_field_of_its_result() -> None:
    import attrs
    from pipekit.engine._results import StageResult

    entry = StageResult("s", "ok", started_at=1765154138.5, ended_at=1765154139.25, slot=1).record()
    assert set(entry) == {field.name for field in attrs.fields(StageResult)} | {"host"}
    assert (entry["started_at"], entry["ended_at"]) == (
        "2025-12-08T00:35:38.500Z",
        "2025-12-08T00:35:39.250Z",
    )
