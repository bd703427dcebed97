"""Secrets reach a shell command by name (``params.env_pass``), never by
value into fingerprints, state, records or logs (issue 20 item 10)."""

from __future__ import annotations

from pathlib import Path

from conftest import Project

SECRET = "s3cr3t-token-7f2e9c41"


def files_holding(root: Path, text: str) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and text.encode() in p.read_bytes()]


def secret_stage(project: Project, **params: object) -> None:
    project.write("in.txt", "abc\n")
    project.pipeline(
        [
            {
                "name": "call",
                "uses": "shell",
                "inputs": ["in.txt"],
                "outputs": ["o.txt"],
                "params": {"cmd": 'printf %s "$API_TOKEN" > {output}', **params},
            }
        ]
    )


def test_a_secret_passed_by_name_reaches_the_command_and_nothing_else(project: Project) -> None:
    secret_stage(project, env_pass=["API_TOKEN"])
    env = project.env(API_TOKEN=SECRET)
    proc = project.cli("-vv", "run", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    assert project.read("o.txt") == SECRET
    assert SECRET not in proc.stdout and SECRET not in proc.stderr
    assert files_holding(project.root / ".pipekit", SECRET) == []
    status = project.cli("-vv", "status", "--json", env=env)
    assert status.returncode == 0 and SECRET not in status.stdout + status.stderr
    assert '"up to date' in status.stdout or "up to date" in status.stdout


def test_a_missing_passed_variable_fails_the_stage_naming_it(project: Project) -> None:
    secret_stage(project, env_pass=["API_TOKEN"])
    env = project.env()
    env.pop("API_TOKEN", None)
    summary = project.run_json(expect=1, env=env)
    (stage,) = summary["stages"]
    assert "API_TOKEN" in stage["reason"] and "not set" in stage["reason"], stage
    assert not (project.root / "o.txt").exists()


def test_a_bad_variable_name_is_a_config_error(project: Project) -> None:
    secret_stage(project, env_pass=["NOT=A NAME"])
    proc = project.cli("run")
    assert proc.returncode == 2, proc.stderr
    assert "env_pass" in proc.stderr and "Traceback" not in proc.stderr
