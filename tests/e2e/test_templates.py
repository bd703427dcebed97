"""Templated stages (issue 21): vars, foreach, matrix and ${...}, through
the real ``pipekit`` command; their errors one line each, exit 2."""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import Project

PARAMS = """\
[prepare]
min_rows = 1
[train]
lr = 0.1
[unused]
x = 1
"""


def models(project: Project) -> None:
    """The issue's example, with commands that run anywhere."""
    for region in ("us", "eu", "asia"):
        project.write(f"data/{region}.csv", f"{region}\n")
    project.write("params.toml", PARAMS)
    project.pipeline(
        [
            {
                "name": "prepare",
                "foreach": ["us", "eu", "asia"],
                "uses": "shell",
                "inputs": ["data/${item}.csv"],
                "outputs": ["work/${item}.clean"],
                "params": {
                    "cmd": "echo min=${prepare.min_rows} > {output}; cat {input} >> {output}"
                },
            },
            {
                "name": "train",
                "matrix": {"region": ["us", "eu"], "seed": "${seeds}"},
                "uses": "shell",
                "inputs": ["work/${item.region}.clean"],
                "outputs": ["models/${item.region}-${item.seed}.bin"],
                "params": {"cmd": "echo lr=${train.lr} seed=${item.seed} > {output}"},
            },
        ],
        name="models",
        vars=["params.toml", {"seeds": [1, 2]}],
    )


def test_foreach_and_matrix_make_one_stage_per_item(project: Project) -> None:
    models(project)
    summary = project.run_json()
    assert list(project.statuses(summary)) == [
        "prepare@us", "prepare@eu", "prepare@asia",
        "train@us-1", "train@us-2", "train@eu-1", "train@eu-2",
    ]  # fmt: skip
    assert set(project.statuses(summary).values()) == {"ok"}
    assert project.read("work/eu.clean") == "min=1\neu\n"
    assert project.read("models/eu-2.bin") == "lr=0.1 seed=2\n"


def test_a_stage_reruns_for_the_values_it_uses_and_no_other(project: Project) -> None:
    models(project)
    project.run_json()
    project.write("params.toml", PARAMS.replace("x = 1", "x = 2"))
    assert set(project.statuses(project.run_json()).values()) == {"skipped"}
    project.write("params.toml", PARAMS.replace("lr = 0.1", "lr = 0.2"))
    status = json.loads(project.cli("status", "--json", "train@us-1").stdout)
    assert status["stages"][-1]["reason"] == "params changed: train.lr 0.1 -> 0.2"
    statuses = project.statuses(project.run_json())
    assert {n for n, s in statuses.items() if s == "ok"} == {
        "train@us-1",
        "train@us-2",
        "train@eu-1",
        "train@eu-2",
    }
    assert project.read("models/us-1.bin") == "lr=0.2 seed=1\n"


def test_foreach_over_a_table_gives_key_and_item(project: Project) -> None:
    project.write("in.txt", "x\n")
    project.pipeline(
        [
            {
                "name": "greet",
                "foreach": {"en": {"word": "hello"}, "fr": {"word": "salut"}},
                "uses": "shell",
                "inputs": ["in.txt"],
                "outputs": ["out/${key}.txt"],
                "params": {"cmd": "echo ${item.word} > {output}"},
            }
        ]
    )
    assert project.statuses(project.run_json()) == {"greet@en": "ok", "greet@fr": "ok"}
    assert project.read("out/fr.txt") == "salut\n"


def test_a_whole_reference_keeps_its_type_and_after_names_generated_stages(
    project: Project,
) -> None:
    project.write("a.txt", "a\n")
    project.write("b.txt", "b\n")
    project.pipeline(
        [
            {
                "name": "cat",
                "uses": "shell",
                "inputs": "${files}",
                "outputs": ["all.txt"],
                "params": {"cmd": "cat {inputs} > {output}; echo '$${{literal}}' >> {output}"},
                "after": ["copy@0"],
            },
            {
                "name": "copy",
                "foreach": [["a.txt"]],
                "uses": "copy",
                "inputs": "${item}",
                "outputs": ["copied.txt"],
            },
        ],
        vars={"files": ["a.txt", "b.txt"]},
    )
    summary = project.run_json()
    assert list(project.statuses(summary)) == ["copy@0", "cat"]  # after the generated stage
    assert project.read("all.txt") == "a\nb\n${literal}\n"


def test_a_file_without_templates_keeps_its_dollar_braces(project: Project) -> None:
    """No vars, foreach or matrix: the file is left as written (the shell
    stage's own {{ }} give the command its ${X})."""
    project.write("in.txt", "x\n")
    project.pipeline(
        [
            {
                "name": "s",
                "uses": "shell",
                "inputs": ["in.txt"],
                "outputs": ["o.txt"],
                "params": {"cmd": "echo '${{X}}' > {output}"},
            }
        ]
    )
    project.run_json()
    assert project.read("o.txt") == "${X}\n"


def test_a_changed_vars_file_is_seen_by_a_cached_plan(project: Project) -> None:
    models(project)
    project.run_json()
    project.run_json()  # from the cached plan
    project.write("params.toml", PARAMS.replace("min_rows = 1", "min_rows = 5"))
    statuses = project.statuses(project.run_json())
    assert statuses["prepare@us"] == "ok", statuses
    assert project.read("work/us.clean") == "min=5\nus\n"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"params": {"cmd": "echo ${train.lrr} > {output}"}},
            "'train' has no key 'lrr' (did you mean 'train.lr'?)",
        ),
        ({"params": {"cmd": "echo ${nothing} > {output}"}}, "no variable 'nothing'; defined: "),
        ({"params": {"cmd": "echo ${train.lr > {output}"}}, "'${' not followed by a name and '}'"),
        ({"foreach": 3}, "foreach: expected a list or a table, got int"),
        ({"matrix": {"seed": 1}}, "matrix.seed: expected a non-empty list, got 1"),
        ({"foreach": ["a b"]}, "'s@a b' is not a valid generated stage name"),
        ({"foreach": ["a", "a"]}, "s@a"),
        ({"foreach": [1], "matrix": {"x": [1]}}, "foreach and matrix: give one of them"),
        ({"params": {"cmd": "echo x${seeds} > {output}"}}, "${seeds} is a list"),
    ],
    ids=[
        "typo",
        "undefined",
        "unterminated",
        "foreach-int",
        "matrix-scalar",
        "bad-name",
        "twice",
        "both",
        "list-in-text",
    ],
)
def test_template_errors_are_one_line_naming_file_and_stage(
    project: Project, change: dict[str, Any], message: str
) -> None:
    project.write("in.txt", "x\n")
    project.write("params.toml", PARAMS)
    stage: dict[str, Any] = {
        "name": "s",
        "uses": "shell",
        "inputs": ["in.txt"],
        "outputs": ["o-${item}.txt"] if "foreach" in change else ["o.txt"],
        "params": {"cmd": "cp {input} {output}"},
    }
    project.pipeline([{**stage, **change}], vars=["params.toml", {"seeds": [1, 2]}])
    proc = project.cli("run")
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert message in proc.stderr, proc.stderr
    assert str(project.file) in proc.stderr


def test_a_missing_vars_file_is_a_config_error(project: Project) -> None:
    project.write("in.txt", "x\n")
    project.pipeline(
        [{"name": "s", "uses": "copy", "inputs": ["in.txt"], "outputs": ["o.txt"]}],
        vars=["nowhere.toml"],
    )
    proc = project.cli("run")
    assert proc.returncode == 2
    assert "vars: cannot read 'nowhere.toml'" in proc.stderr, proc.stderr


# -- targets ---------------------------------------------------------------------


def test_a_target_runs_with_what_it_needs_upstream_and_nothing_else(project: Project) -> None:
    models(project)
    summary = project.run_json("train@eu-*")
    assert project.statuses(summary) == {"prepare@eu": "ok", "train@eu-1": "ok", "train@eu-2": "ok"}
    assert not (project.root / "work/us.clean").exists()
    status = json.loads(project.cli("status", "--json", "prepare@us", "--downstream").stdout)
    assert [s["name"] for s in status["stages"]] == ["prepare@us", "train@us-1", "train@us-2"]


def test_downstream_and_force_take_patterns(project: Project) -> None:
    models(project)
    project.run_json()
    summary = project.run_json("prepare@asia", "--downstream", "--force", "prepare@*")
    assert project.statuses(summary) == {"prepare@asia": "ok"}  # nothing reads asia's output


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("trian@us-1", "target: unknown stage 'trian@us-1' (did you mean 'train@us-1'?); stages: "),
        ("nothing*", "target: no stage matches 'nothing*'"),
    ],
)
def test_a_target_that_matches_nothing_is_exit_2(
    project: Project, target: str, message: str
) -> None:
    models(project)
    proc = project.cli("run", target)
    assert proc.returncode == 2
    assert message in proc.stderr, proc.stderr


# -- pipekit dag -------------------------------------------------------------------


def test_dag_folds_generated_stages_unless_expanded(project: Project) -> None:
    models(project)
    proc = project.cli("dag")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "  prepare@* (3 stages)",
        "  train@* (4 stages)    <- prepare@*",
    ]
    expanded = project.cli("dag", "--expand", "train@eu-1").stdout.splitlines()
    assert expanded == ["  prepare@eu", "  train@eu-1  <- prepare@eu"]


def test_dag_as_dot_mermaid_and_json(project: Project) -> None:
    models(project)
    assert '"prepare@*" -> "train@*";' in project.cli("dag", "--dot").stdout
    mermaid = project.cli("dag", "--mermaid").stdout
    assert mermaid.startswith("flowchart LR\n") and "n0 --> n1" in mermaid
    doc = json.loads(project.cli("dag", "--json").stdout)
    assert doc["schema_version"] == 1
    assert len(doc["nodes"]) == 7 and ["prepare@us", "train@us-1"] in doc["edges"]
