"""``-q`` prints only errors on every command, and ``--log-format json``
makes every line on stderr a JSON object (issue 26)."""

from __future__ import annotations

import json
import time

from conftest import Project
from pipekit.cli._commands import COMMANDS

# Each command (and its actions), as run with -q on a pipeline that ran.
QUIET_CASES = {
    "run": [["run"], ["run", "--dry-run"], ["run", "--force", "a"]],
    "status": [["status"]],
    "check": [["check"]],
    "state": [["state", "show"], ["state", "history"], ["state", "backups"]],
    "checkpoints": [["checkpoints", "list"], ["checkpoints", "verify"]],
    "idem": [["idem", "list"], ["idem", "sweep"]],
    "dlq": [["dlq", "list"]],
    "plugins": [["plugins"]],
    "doctor": [["doctor"]],
}


def _pipeline(project: Project, cmd: str = "cp {input} {output}") -> None:
    project.write("in.txt", "one\n")
    project.pipeline(
        [{"name": "a", "uses": "shell", "inputs": ["in.txt"], "outputs": ["a.txt"],
          "params": {"cmd": cmd}}]
    )  # fmt: skip


def test_every_command_is_covered() -> None:
    assert set(QUIET_CASES) == set(COMMANDS)


def test_quiet_prints_nothing_when_all_is_well(project: Project) -> None:
    _pipeline(project)
    project.run_json()
    for cases in QUIET_CASES.values():
        # -q before the command, and (once for each) after it
        for args in [["-q", *args] for args in cases] + [[*cases[0], "-q"]]:
            proc = project.cli(*args)
            assert proc.returncode == 0, (args, proc.stderr)
            assert (proc.stdout, proc.stderr) == ("", ""), args


def test_quiet_keeps_json_documents_on_stdout(project: Project) -> None:
    _pipeline(project)
    for args in (["run", "--json"], ["status", "--json"], ["check", "--json"]):
        proc = project.cli("-q", *args)
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["schema_version"] == 1
        assert proc.stderr == ""


def test_quiet_still_says_errors(project: Project) -> None:
    _pipeline(project, cmd="echo boom >&2; exit 3")
    proc = project.cli("-q", "run")
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert "pipekit: error: stage 'a': failed after 1 attempt(s)" in proc.stderr
    proc = project.cli("-q", "status", "-f", "missing.toml")
    assert proc.returncode == 2 and proc.stdout == "" and "pipekit: error:" in proc.stderr


def _json_lines(stderr: str) -> list[dict]:
    docs = [json.loads(line) for line in stderr.splitlines()]
    for doc in docs:
        assert {"time", "level", "logger", "message"} <= set(doc), doc
    return docs


def test_every_stderr_line_is_json_with_log_format_json(project: Project) -> None:
    _pipeline(project, cmd="echo boom >&2; exit 3")
    cases = [
        (["--log-format", "json", "run", "-v"], 1),  # a failing stage, info logs
        (["run", "--log-format=json", "--jobs", "x"], 2),  # a usage error
        (["--log-format", "json", "run", "--no-such-option"], 2),
        (["--log-format", "json"], 2),  # no command
        (["--log-format", "json", "status", "-f", "missing.toml"], 2),  # a config error
        (["--log-format", "json", "run", "--force", "nope"], 2),
        (["--log-format", "json", "checkpoints", "show", "nope"], 2),
    ]
    for args, code in cases:
        proc = project.cli(*args)
        assert proc.returncode == code, (args, proc.stderr)
        docs = _json_lines(proc.stderr)
        assert docs and docs[-1]["level"] == "error", (args, docs)
    failed = _json_lines(project.cli("--log-format", "json", "run").stderr)
    assert "stage 'a': failed after 1 attempt(s)" in failed[-1]["message"]
    usage = _json_lines(project.cli("--log-format", "json", "run", "--jobs", "x").stderr)
    assert usage[-1]["usage"].startswith("usage: pipekit run")


def test_a_processors_traceback_is_inside_the_json_line(project: Project) -> None:
    project.write("in.txt", "x\n")
    project.pipeline([{
        "name": "buggy", "uses": "flaky", "inputs": ["in.txt"], "outputs": ["out.txt"],
        "params": {"counter": str(project.root / "count"), "fail_times": 5},
        "retry": {"attempts": 1},
    }])  # fmt: skip
    proc = project.cli("--log-format", "json", "run", "-v")
    assert proc.returncode == 1, proc.stderr
    docs = _json_lines(proc.stderr)
    assert "RuntimeError: transient failure 1" in docs[-1]["traceback"], docs


def test_waiting_on_another_runner_is_logged_as_json(project: Project) -> None:
    project.write("in.txt", "one\n")
    project.pipeline(
        [{"name": "a", "uses": "shell", "inputs": ["in.txt"], "outputs": ["a.txt"],
          "params": {"cmd": "touch started && sleep 3 && cp {input} {output}"}}]
    )  # fmt: skip
    first = project.popen("run")
    deadline = time.monotonic() + 60
    while not (project.root / "started").exists():
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()
        time.sleep(0.02)
    second = project.cli("--log-format", "json", "run", "--lock-timeout", "1")
    first.communicate(timeout=60)
    assert second.returncode == 0, second.stderr
    docs = _json_lines(second.stderr)
    assert any("waiting on" in doc["message"] for doc in docs), docs
