"""``-q`` prints only errors on every command, and ``--log-format json``
makes every line on stderr a JSON object (issue 26)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from conftest import Project
from pipekit.cli._commands import COMMANDS

# Each command (and its actions), as run with -q on a pipeline that ran.
QUIET_CASES = {
    "run": [["run"], ["run", "--dry-run"], ["run", "--force", "a"]],
    "status": [["status"]],
    "dag": [["dag"]],
    "check": [["check"]],
    "state": [["state", "show"], ["state", "history"], ["state", "backups"]],
    "checkpoints": [["checkpoints", "list"], ["checkpoints", "verify"]],
    "idem": [["idem", "list"], ["idem", "sweep"]],
    "dlq": [["dlq", "list"]],
    "plugins": [["plugins"]],
    "doctor": [["doctor"]],
    "runs": [["runs", "list"], ["runs", "show"]],
    "report": [["report", "-o", "report.html"]],
    "init": [["init", "--force"]],  # last: it replaces the pipeline file
}
DATA_COMMANDS = {"completion"}  # what they print is the data asked for, -q or not


def _pipeline(project: Project, cmd: str = "cp {input} {output}") -> None:
    project.write("in.txt", "one\n")
    project.pipeline(
        [{"name": "a", "uses": "shell", "inputs": ["in.txt"], "outputs": ["a.txt"],
          "params": {"cmd": cmd}}]
    )  # fmt: skip


def test_every_command_is_covered() -> None:
    assert set(QUIET_CASES) | DATA_COMMANDS == set(COMMANDS)


def test_quiet_keeps_a_completion_script(project: Project) -> None:
    proc = project.cli("-q", "completion", "bash")
    assert proc.returncode == 0, proc.stderr
    assert "pipekit" in proc.stdout and proc.stderr == ""


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
    """A second runner that finds the stage's lock held by a live runner
    logs that it waits on (at once with --lock-timeout 0), as JSON."""
    project.write("in.txt", "one\n")
    project.pipeline(
        [{"name": "a", "uses": "shell", "inputs": ["in.txt"], "outputs": ["a.txt"],
          "params": {"cmd": "touch started; while [ ! -e go ]; do sleep 0.05; done; "
                            "cp {input} {output}"}}]
    )  # fmt: skip
    first = project.popen("run")
    deadline = time.monotonic() + 60
    while not (project.root / "started").exists():
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()
        time.sleep(0.02)
    second = project.popen("--log-format", "json", "run", "--lock-timeout", "0")
    assert second.stderr is not None
    line = second.stderr.readline()  # it waits on: then the first may finish
    (project.root / "go").touch()
    _out, rest = second.communicate(timeout=60)
    first.communicate(timeout=60)
    assert second.returncode == 0, line + rest
    docs = _json_lines(line + rest)
    assert "waiting on" in docs[0]["message"], docs


def test_python_warnings_and_other_loggers_are_json_too(project: Project, tmp_path) -> None:
    """A plugin's warnings.warn and a library's logger, without handlers of
    their own, would print plain lines: with --log-format json they are JSON."""
    script = (
        "import logging, warnings\n"
        "from pipekit.cli import _main\n"
        "def noisy(args):\n"
        "    warnings.warn('old API', DeprecationWarning, stacklevel=1)\n"
        "    logging.getLogger('somelib').warning('from a library')\n"
        "    return 0\n"
        "parser = _main.build_parser('plugins')\n"
        "args = parser.parse_args(['--log-format', 'json', 'plugins'])\n"
        "args.handler = noisy\n"
        "_main._setup_logging(args)\n"
        "warnings.simplefilter('always')\n"
        "raise SystemExit(_main._handle(args))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=project.root, env=project.env(),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    docs = _json_lines(proc.stderr)
    messages = " ".join(doc["message"] for doc in docs)
    assert "old API" in messages and "from a library" in messages, docs


def test_a_worker_process_logs_as_the_runner_does(project: Project) -> None:
    """A stage with a timeout its processor does not enforce runs in a
    worker process: its log lines follow -v and --log-format too."""
    project.write("in.txt", "x\n")
    project.pipeline(
        [{"name": "nap", "uses": "sleep", "inputs": ["in.txt"], "outputs": ["o.txt"],
          "params": {"seconds": 0.01}, "timeout": 60}]
    )  # fmt: skip
    proc = project.cli("--log-format", "json", "run", "-v")
    assert proc.returncode == 0, proc.stderr
    docs = _json_lines(proc.stderr)
    slept = [doc for doc in docs if "slept" in doc["message"]]
    assert slept and slept[0]["logger"] == "pipekit.stage.nap", docs
    text = project.cli("run", "-v", "--force", "nap")
    assert "pipekit: INFO: slept 0.01s in process" in text.stderr, text.stderr
    quiet = project.cli("run", "--force", "nap")
    assert "slept" not in quiet.stderr


def test_quiet_hides_python_warnings(project: Project) -> None:
    script = (
        "import warnings\n"
        "from pipekit.cli import _main\n"
        "def noisy(args):\n"
        "    warnings.warn('old API', DeprecationWarning, stacklevel=1)\n"
        "    return 0\n"
        "parser = _main.build_parser('plugins')\n"
        "for words in (['-q', 'plugins'], ['plugins']):\n"
        "    args = parser.parse_args(words)\n"
        "    args.handler = noisy\n"
        "    _main._setup_logging(args)\n"
        "    warnings.simplefilter('always')\n"
        "    _main._handle(args)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=project.root, env=project.env(),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (line,) = proc.stderr.splitlines()  # the second call's, not the quiet one's
    assert line.startswith("pipekit: WARNING: ") and "old API" in line, proc.stderr
