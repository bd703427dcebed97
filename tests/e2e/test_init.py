"""``pipekit init`` through the real CLI: the starter pipeline runs as written,
an existing pipeline file is never overwritten by accident, and the state
folder is in ``.gitignore`` once."""

from __future__ import annotations

import json
import tomllib

from conftest import Project

STATE_LINE = ".pipekit/"


def test_starter_pipeline_runs_then_skips(project: Project) -> None:
    proc = project.cli("init")
    assert proc.returncode == 0, proc.stderr
    assert "wrote pipekit.toml" in proc.stdout and "added .pipekit/ to .gitignore" in proc.stdout
    text = project.read("pipekit.toml")
    assert text.startswith("# ") and tomllib.loads(text)["stages"]
    assert project.read(".gitignore") == STATE_LINE + "\n"

    first = project.run_json()
    assert first["status"] == "ok", first
    assert set(project.statuses(first).values()) == {"ok"}
    second = project.run_json()
    assert set(project.statuses(second).values()) == {"skipped"}, second
    assert project.read("out/hello-upper.txt").startswith("HELLO FROM PIPEKIT\n")


def test_starter_runs_with_the_installed_plugins_only(project: Project) -> None:
    """Without the test suite's own plugin module: what a user has."""
    env = project.env()
    del env["PIPEKIT_PLUGIN_MODULES"]
    assert project.cli("init", env=env).returncode == 0
    proc = project.cli("run", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["status"] == "ok"


def test_existing_pipekit_toml_is_kept(project: Project) -> None:
    project.write("pipekit.toml", "# mine\n")
    proc = project.cli("init")
    assert proc.returncode == 2
    assert "pipekit.toml already exists: not overwritten (--force replaces it)" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert project.read("pipekit.toml") == "# mine\n"
    assert not (project.root / ".gitignore").exists()


def test_force_replaces_pipekit_toml(project: Project) -> None:
    project.write("pipekit.toml", "# mine\n")
    proc = project.cli("init", "--force")
    assert proc.returncode == 0, proc.stderr
    assert "[[stages]]" in project.read("pipekit.toml")


def test_another_pipeline_file_is_never_hidden(project: Project) -> None:
    project.write("pipeline.json", '{"stages": []}\n')
    proc = project.cli("init", "--force")
    assert proc.returncode == 2
    assert "pipeline.json already exists: a new pipekit.toml would be used instead" in proc.stderr
    assert not (project.root / "pipekit.toml").exists()


def test_gitignore_gets_one_line_appended(project: Project) -> None:
    project.write(".gitignore", "*.pyc\nbuild/")  # no newline at the end
    assert project.cli("init").returncode == 0
    assert project.read(".gitignore") == "*.pyc\nbuild/\n.pipekit/\n"
    proc = project.cli("init", "--force")
    assert proc.returncode == 0 and ".gitignore" not in proc.stdout
    assert project.read(".gitignore") == "*.pyc\nbuild/\n.pipekit/\n"


def test_gitignore_entry_in_another_spelling_counts(project: Project) -> None:
    project.write(".gitignore", "/.pipekit\n")
    assert project.cli("init").returncode == 0
    assert project.read(".gitignore") == "/.pipekit\n"


def test_quiet_prints_nothing(project: Project) -> None:
    proc = project.cli("init", "-q")
    assert proc.returncode == 0 and proc.stdout == "" and proc.stderr == ""
    assert (project.root / "pipekit.toml").exists()
