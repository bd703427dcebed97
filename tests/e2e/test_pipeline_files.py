"""Several pipeline files in one folder (issue 21): each its own pipeline,
named for its file, with its own stage entries."""

from __future__ import annotations

import json

from conftest import Project, write_toml


def test_two_pipeline_files_in_one_folder_do_not_share_state(project: Project) -> None:
    project.write("in.txt", "hi\n")
    for name, uses in (("a", "upper"), ("b", "lower")):
        stage = {"name": "s", "uses": uses, "inputs": ["in.txt"], "outputs": [f"{name}.out"]}
        write_toml(project.root / f"{name}.toml", {"stages": [stage]})
    first_a = project.run_json("-f", "a.toml")
    first_b = project.run_json("-f", "b.toml")
    assert first_a["pipeline"] == "a" and first_b["pipeline"] == "b"
    assert project.reasons(first_b) == {"s": "never run"}  # was: processor changed (upper -> lower)
    assert project.statuses(project.run_json("-f", "a.toml")) == {"s": "skipped"}
    shown = project.cli("state", "show", "-f", "b.toml", "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["data"]["stages"]["s"]["processor"] == "lower"
    assert (project.root / ".pipekit" / "state.a.json").exists()
    assert not (project.root / ".pipekit" / "state.json").exists()
