"""The runner's state on PipelineState, and `pipekit state`, through the real CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import Project
from pipekit import PipelineState
from pipekit.state._lock import HOST


def two_stages(project: Project) -> None:
    project.write("in.txt", "hello\n")
    project.pipeline(
        [
            {"name": "copy", "uses": "copy", "inputs": ["in.txt"], "outputs": ["out/a.txt"]},
            {"name": "upper", "uses": "upper", "inputs": ["out/a.txt"], "outputs": ["out/b.txt"]},
        ]
    )


def state_json(project: Project, *args: str, expect: int = 0) -> object:
    proc = project.cli("state", *args, "--json")
    assert proc.returncode == expect, (proc.stdout, proc.stderr)
    doc = json.loads(proc.stdout)
    lists = {"history": "transactions", "backups": "backups"}
    return doc[lists[args[0]]] if args[0] in lists and expect == 0 else doc


def test_runner_state_goes_through_pipeline_state(project: Project) -> None:
    two_stages(project)
    project.run_json()
    state = PipelineState(project.root / ".pipekit" / "state.json")
    data = state.read()
    assert set(data["stages"]) == {"copy", "upper"} and data["pipeline"] == "proj"
    (entry,) = state.history()
    assert entry.operation == "transaction" and entry.success and entry.pid != os.getpid()

    shown = state_json(project, "show")
    assert isinstance(shown, dict)
    assert shown["exists"] and shown["data"] == data and shown["path"] == str(state.path)

    # a no-op run writes nothing: same file, same log, no backup
    before = (state.path.read_bytes(), os.stat(state.path).st_ino, state.log_path.read_bytes())
    summary = project.run_json()
    assert set(project.statuses(summary).values()) == {"skipped"}
    assert before == (
        state.path.read_bytes(),
        os.stat(state.path).st_ino,
        state.log_path.read_bytes(),
    )
    assert state.list_backups() == []

    project.write("in.txt", "changed\n")
    project.run_json()
    assert len(state.history()) == 2
    (backup,) = state.list_backups()
    assert state.load_backup(backup) == data
    listed = state_json(project, "backups")
    assert isinstance(listed, list)
    assert [(b["name"], b["parses"]) for b in listed] == [(backup.name, True)]
    history = state_json(project, "history", "-n", "1")
    assert isinstance(history, list) and len(history) == 1 and history[0]["backup"] == backup.name


def test_a_damaged_runner_state_is_reported_and_restored(project: Project) -> None:
    two_stages(project)
    project.run_json()
    project.write("in.txt", "changed\n")
    project.run_json()
    path = project.root / ".pipekit" / "state.json"
    state = PipelineState(path)
    good = state.load_backup(state.list_backups()[0])  # the state after the first run
    path.write_text(path.read_text()[:100])  # cut short in place, as by a disk error

    # runs go on (the idempotency store says what is done), with a warning
    proc = project.cli("run", "--json")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "is not valid JSON" in proc.stderr
    assert "pipekit state restore" in proc.stderr
    assert set(project.statuses(json.loads(proc.stdout)).values()) == {"skipped"}
    proc = project.cli("status")
    assert proc.returncode == 0 and "is not valid JSON" in proc.stderr

    # a run that commits a stage cannot save its entry: said, not fatal
    project.write("in.txt", "again\n")
    proc = project.cli("run", "--json")
    assert proc.returncode == 0, proc.stderr
    assert "this run's stage entries were not saved" in proc.stderr

    proc = project.cli("state", "show")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "is not valid JSON" in proc.stderr and "state.json.backups" in proc.stderr

    proc = project.cli("state", "restore")
    assert proc.returncode == 0, proc.stderr
    assert "restored" in proc.stdout and "kept as backup" in proc.stdout
    assert json.loads(path.read_text()) == good
    assert project.cli("state", "show").returncode == 0
    history = state_json(project, "history")
    assert isinstance(history, list)
    # newest first: the restore; the runs that could not save; the damaged
    # content, logged as "external" by the first transaction that met it
    ops = [(e["operation"], e["success"]) for e in history]
    assert ops[0] == ("restore", True)
    failed = [e for e in history if not e["success"]]
    assert len(failed) == 2 and all("StateReadError" in e["error"] for e in failed)
    assert ops[3] == ("external", True)

    proc = project.cli("run", "--json")
    assert proc.returncode == 0 and "not valid JSON" not in proc.stderr


def test_state_commands_on_any_file(tmp_path: Path, project: Project) -> None:
    f = tmp_path / "app" / "counter.json"
    state = PipelineState(f)
    for i in range(3):
        state.write({"i": i})
    names = [b.name for b in state.list_backups()]

    # options before or after the subcommand; no pipeline file needed
    for args in (["--path", str(f), "show"], ["show", "--path", str(f)]):
        proc = project.cli("state", *args)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.startswith(f"{f}: ") and '"i": 2' in proc.stdout
    proc = project.cli("state", "--path", str(f), "history")
    assert proc.returncode == 0 and proc.stdout.count("write") == 3
    proc = project.cli("state", "--path", str(f), "backups")
    assert proc.returncode == 0 and all(n in proc.stdout for n in names)

    proc = project.cli("state", "--path", str(f), "restore", names[-1])  # the oldest, by name
    assert proc.returncode == 0, proc.stderr
    assert state.read() == {"i": 0}
    proc = project.cli("state", "--path", str(f), "restore", str(state.list_backups()[0].path))
    assert proc.returncode == 0 and state.read() == {"i": 2}

    proc = project.cli("state", "--path", str(tmp_path / "nothing.json"), "restore")
    assert proc.returncode == 1 and "no backup of" in proc.stderr
    proc = project.cli("state", "--path", str(tmp_path / "nothing.json"), "show", "--json")
    assert proc.returncode == 0 and json.loads(proc.stdout)["exists"] is False
    proc = project.cli("state", "--path", str(f), "restore", "no-such-backup.json")
    assert proc.returncode == 1 and "cannot read backup" in proc.stderr


def test_state_command_errors(project: Project) -> None:
    proc = project.cli("state", "show")  # no pipeline file here, no --path
    assert proc.returncode == 2 and "no pipeline file" in proc.stderr
    proc = project.cli("state")
    assert proc.returncode == 2
    proc = project.cli("state", "--path", "x.json", "history", "-n", "-1")
    assert proc.returncode == 2 and "--limit" in proc.stderr


def test_state_lock_timeout_exits_3_naming_the_holder(tmp_path: Path, project: Project) -> None:
    f = tmp_path / "s.json"
    PipelineState(f).write({"a": 1})
    code = (
        "import time\nfrom pipekit import PipelineState\n"
        f"with PipelineState({str(f)!r}).transaction():\n"
        "    print('held', flush=True)\n    time.sleep(60)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        proc = project.cli("state", "--path", str(f), "--lock-timeout", "0.2", "restore")
        assert proc.returncode == 3, proc.stderr
        assert f"held by pid {holder.pid} on host {HOST}" in proc.stderr
        assert "Traceback" not in proc.stderr
    finally:
        holder.kill()
        holder.wait()
