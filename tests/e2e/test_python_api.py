"""pipekit.run / pipekit.status / pipekit.Pipeline from a program (issue 21):
usable from a thread, errors as exceptions, never sys.exit."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pipekit
import pytest
from conftest import Project


def _stages() -> list[dict[str, Any]]:
    return [
        {"name": "a", "uses": "upper", "inputs": ["in.txt"], "outputs": ["a.txt"]},
        {"name": "b", "uses": "copy", "inputs": ["a.txt"], "outputs": ["b.txt"]},
    ]


def test_run_from_a_thread_that_is_not_the_main_one(project: Project) -> None:
    project.write("in.txt", "x\n")
    project.pipeline(_stages())
    outcomes: list[Any] = []
    thread = threading.Thread(target=lambda: outcomes.append(pipekit.run(project.file, jobs=2)))
    thread.start()
    thread.join(120)
    (outcome,) = outcomes
    assert outcome.status == "ok" and outcome.exit_code == 0
    assert project.read("b.txt") == "X\n"
    assert outcome.summary("p")["stages"][1]["reason_code"] == "never_ran"


def test_status_targets_force_and_dry_run(project: Project) -> None:
    project.write("in.txt", "x\n")
    project.pipeline(_stages())
    pipeline = pipekit.Pipeline.load(project.file)
    assert [(s.name, s.status) for s in pipekit.status(pipeline, ["a"])] == [("a", "will-run")]
    pipekit.run(pipeline)
    runs = sorted((project.root / ".pipekit" / "runs").iterdir())
    dry = pipekit.run(pipeline, force="a*", dry_run=True)
    assert [s.status for s in dry] == ["will-run", "will-run"]  # b: its upstream will run
    assert sorted((project.root / ".pipekit" / "runs").iterdir()) == runs  # nothing ran


def test_errors_are_exceptions(project: Project, tmp_path: Path) -> None:
    with pytest.raises(pipekit.ConfigError, match="no such pipeline file"):
        pipekit.run(tmp_path / "missing.toml")
    with pytest.raises(pipekit.ConfigError, match="unknown stage processor 'nope'"):
        pipekit.Pipeline.from_dict({"stages": [{"name": "s", "uses": "nope"}]}, root=tmp_path)
    project.write("in.txt", "x\n")
    project.pipeline(_stages())
    with pytest.raises(pipekit.ConfigError, match="unknown stage 'c'"):
        pipekit.run(project.file, ["c"])
