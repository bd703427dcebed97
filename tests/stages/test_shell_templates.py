"""A shell template may hold only the documented placeholders and indexes:
anything else (attribute access, a key, an index of a single path, a field
inside a format spec) is a config error at load, never evaluated (issue 20
item 14)."""

from __future__ import annotations

import pytest
from conftest import Project


def template_stage(project: Project, cmd: str) -> None:
    project.write("in.txt", "abc\n")
    project.pipeline(
        [
            {
                "name": "t",
                "uses": "shell",
                "inputs": ["in.txt"],
                "outputs": ["o.txt"],
                "params": {"cmd": cmd},
            }
        ]
    )


@pytest.mark.parametrize(
    "cmd",
    [
        "echo {output.__class__} > {output}",
        "echo {inputs[0].__class__} > {output}",
        "echo {inputs.__class__.__init__.__globals__} > {output}",
        "echo {inputs[x]} > {output}",
        "echo {input[0]} > {output}",
        "echo {stage[0]} > {output}",
        "echo {output:{inputs.__class__}} > {output}",
        "echo {} > {output}",
        "echo {0} > {output}",
    ],
)
def test_fields_beyond_the_documented_placeholders_are_config_errors(
    project: Project, cmd: str
) -> None:
    template_stage(project, cmd)
    proc = project.cli("run")
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    assert "stage 't'" in proc.stderr and "params.cmd" in proc.stderr, proc.stderr
    assert not (project.root / "o.txt").exists()  # nothing ran


@pytest.mark.parametrize(
    ("cmd", "out"),
    [
        ("cp {inputs[0]} {outputs[0]}", "abc\n"),
        ("cat {inputs} > {output}", "abc\n"),
        ("echo {stage} {run_id} > /dev/null; cat {input} > {output}", "abc\n"),
        ("awk '{{print toupper($0)}}' {input} > {output}", "ABC\n"),
    ],
)
def test_documented_placeholders_still_work(project: Project, cmd: str, out: str) -> None:
    template_stage(project, cmd)
    assert project.statuses(project.run_json()) == {"t": "ok"}
    assert project.read("o.txt") == out
