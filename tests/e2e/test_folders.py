"""Folders as inputs and outputs, and globs (issue 22). Real runs of the
``pipekit`` command in subprocesses, real files."""

from __future__ import annotations

import json
import os
from pathlib import Path

from conftest import Project
from pipekit._atomic import TEMP_MARK


def temp_leftovers(root: Path) -> list[str]:
    """Every temp file or folder under ``root`` (the state folder aside)."""
    found = []
    for folder, dirs, files in os.walk(root):
        if ".pipekit" in Path(folder).relative_to(root).parts[:1]:
            continue
        found += [os.path.join(folder, n) for n in dirs + files if TEMP_MARK in n]
    return found


def one_reason(summary: dict) -> str:  # type: ignore[type-arg]
    return str(summary["stages"][0]["reason"])


# -- the crash bug: a folder where a file was declared --------------------------


def test_a_folder_made_where_a_file_output_is_declared_fails_clearly(project: Project) -> None:
    project.write("in.txt", "a\n")
    project.pipeline(
        [
            {
                "name": "mk",
                "uses": "shell",
                "inputs": ["in.txt"],
                "outputs": ["work/split"],
                "params": {"cmd": "mkdir {output} && cp {input} {output}/"},
            }
        ]
    )
    for _ in range(2):  # the second run must not trip over what the first left
        proc = project.cli("run", "--json")
        assert proc.returncode == 1, proc.stderr
        assert "Traceback" not in proc.stderr and "IsADirectoryError" not in proc.stdout
        reason = one_reason(json.loads(proc.stdout))
        assert "'work/split' is a folder" in reason and "'work/split/'" in reason, reason
        assert temp_leftovers(project.root) == []


def test_a_file_input_replaced_by_a_folder_fails_clearly_at_run(project: Project) -> None:
    project.write("data/raw", "a\n")
    project.pipeline(
        [
            {
                "name": "rd",
                "uses": "shell",
                "inputs": ["data/raw"],
                "outputs": ["o.txt"],
                "params": {"cmd": "cat {input} > {output}"},
            }
        ]
    )
    project.run_json()
    (project.root / "data/raw").unlink()
    project.write("data/raw/x.csv", "x\n")  # (the plan cache still holds the file)
    proc = project.cli("run", "--json")
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    reason = one_reason(json.loads(proc.stdout))
    assert "'data/raw' is a folder" in reason and "'data/raw/'" in reason, reason


# -- folder outputs and inputs ------------------------------------------------------


def tree(root: Path) -> dict[str, str]:
    """Relative path -> content of every file under ``root``."""
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


SPLIT = "for f in {input}/*; do cp $f {output}/$(basename $f).out; done"


def split_pipeline(project: Project, **extra: object) -> None:
    project.pipeline(
        [
            {
                "name": "split",
                "uses": "shell",
                "inputs": ["data/raw/"],
                "outputs": ["work/split/"],
                "params": {"cmd": SPLIT},
                **extra,
            }
        ]
    )


def test_a_folder_output_is_made_from_an_empty_temp_folder_and_kept(project: Project) -> None:
    project.write("data/raw/a.csv", "a\n")
    project.write("data/raw/b.csv", "b\n")
    split_pipeline(project)
    assert one_reason(project.run_json()) == "never run"
    assert tree(project.root / "work/split") == {"a.csv.out": "a\n", "b.csv.out": "b\n"}
    assert project.statuses(project.run_json()) == {"split": "skipped"}
    assert temp_leftovers(project.root) == []


def test_a_changed_folder_input_names_the_files_and_replaces_the_whole_tree(
    project: Project,
) -> None:
    project.write("data/raw/a.csv", "a\n")
    project.write("data/raw/b.csv", "b\n")
    project.write("data/raw/c.csv", "c\n")
    split_pipeline(project)
    project.run_json()
    project.write("data/raw/b.csv", "B\n")
    project.write("data/raw/c.csv", "C\n")
    project.write("data/raw/z.csv", "z\n")
    (project.root / "data/raw/a.csv").unlink()
    reason = one_reason(project.run_json())
    assert reason == (
        "input 'data/raw/' changed: 2 files changed, 1 added, 1 removed "
        "(data/raw/a.csv, data/raw/b.csv, ...)"
    ), reason
    assert tree(project.root / "work/split") == {
        "b.csv.out": "B\n",
        "c.csv.out": "C\n",
        "z.csv.out": "z\n",
    }
    assert temp_leftovers(project.root) == []


def test_a_modified_folder_output_is_made_again(project: Project) -> None:
    project.write("data/raw/a.csv", "a\n")
    split_pipeline(project)
    project.run_json()
    project.write("work/split/extra.txt", "x\n")
    assert one_reason(project.run_json()) == "output 'work/split/' was modified"
    assert tree(project.root / "work/split") == {"a.csv.out": "a\n"}


def test_stages_reading_a_folder_output_or_a_path_in_it_run_after_its_maker(
    project: Project,
) -> None:
    project.write("in.txt", "x\n")
    project.pipeline(
        [
            {
                "name": "one",
                "uses": "shell",
                "inputs": ["work/split/a.txt"],
                "outputs": ["one.txt"],
                "params": {"cmd": "cp {input} {output}"},
            },
            {
                "name": "all",
                "uses": "shell",
                "inputs": ["work/split/"],
                "outputs": ["all.txt"],
                "params": {"cmd": "ls {input} > {output}"},
            },
            {
                "name": "some",
                "uses": "shell",
                "inputs": ["work/*/*.txt"],
                "outputs": ["some.txt"],
                "params": {"cmd": "cat {inputs} > {output}"},
            },
            {
                "name": "make",
                "uses": "shell",
                "inputs": ["in.txt"],
                "outputs": ["work/split/"],
                "params": {"cmd": "cp {input} {output}/a.txt && cp {input} {output}/b.txt"},
            },
        ]
    )
    summary = project.run_json()
    assert set(project.statuses(summary).values()) == {"ok"}
    assert project.read("all.txt") == "a.txt\nb.txt\n"
    assert project.read("some.txt") == "x\nx\n"


def test_copy_copies_a_tree(project: Project) -> None:
    project.write("data/raw/a.csv", "a\n")
    project.write("data/raw/sub/b.csv", "b\n")
    project.pipeline(
        [{"name": "c", "uses": "copy", "inputs": ["data/raw/"], "outputs": ["backup/"]}]
    )
    project.run_json()
    assert tree(project.root / "backup") == {"a.csv": "a\n", "sub/b.csv": "b\n"}


def test_a_link_out_of_an_output_folder_is_refused(project: Project, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("s\n")
    project.write("in.txt", "x\n")
    project.pipeline(
        [
            {
                "name": "l",
                "uses": "shell",
                "inputs": ["in.txt"],
                "outputs": ["out/"],
                "params": {"cmd": f"cp {{input}} {{output}}/a && ln -s {secret} {{output}}/l"},
            }
        ]
    )
    proc = project.cli("run", "--json")
    assert proc.returncode == 1, proc.stderr
    reason = one_reason(json.loads(proc.stdout))
    assert "'out/l' is a link to" in reason and "outside the folder (refused)" in reason, reason
    assert not (project.root / "out").exists()
    assert temp_leftovers(project.root) == []


# -- config errors ---------------------------------------------------------------


def test_a_folder_named_without_its_slash_is_a_config_error(project: Project) -> None:
    project.write("data/raw/a.csv", "a\n")
    project.write("work/old/x", "x\n")
    project.pipeline(
        [
            {
                "name": "s",
                "uses": "shell",
                "inputs": ["data/raw"],
                "outputs": ["work/old"],
                "params": {"cmd": "true"},
            }
        ]
    )
    proc = project.cli("run")
    assert proc.returncode == 2, proc.stderr
    assert "'data/raw' is a folder: write it as 'data/raw/'" in proc.stderr
    assert "'work/old' is a folder: write it as 'work/old/'" in proc.stderr


def test_a_file_named_as_a_folder_and_a_missing_folder_are_config_errors(
    project: Project,
) -> None:
    project.write("data/raw", "a\n")
    project.pipeline(
        [
            {
                "name": "s",
                "uses": "shell",
                "inputs": ["data/raw/", "gone/"],
                "outputs": ["o/"],
                "params": {"cmd": "true"},
            }
        ]
    )
    proc = project.cli("run")
    assert proc.returncode == 2, proc.stderr
    assert "'data/raw/' is a file, not a folder: write it as 'data/raw'" in proc.stderr
    assert "'gone/' does not exist and no stage produces it" in proc.stderr


def test_a_folder_input_gone_at_run_fails_its_stage_naming_it(project: Project) -> None:
    project.write("data/raw/a.csv", "a\n")
    project.pipeline(
        [
            {
                "name": "wipe",
                "uses": "shell",
                "inputs": [],
                "outputs": ["w.txt"],
                "params": {"cmd": "rm -r data/raw && touch {output}"},
            },
            {
                "name": "read",
                "uses": "shell",
                "inputs": ["data/raw/"],
                "outputs": ["r.txt"],
                "params": {"cmd": "ls {input} > {output}"},
                "after": ["wipe"],
            },
        ]
    )
    summary = project.run_json(expect=1)
    assert project.reasons(summary)["read"] == "input 'data/raw/' is missing"


# -- globs ----------------------------------------------------------------------------


def test_glob_inputs_are_the_sorted_matches_and_their_changes_rerun(project: Project) -> None:
    project.write("data/b.csv", "b\n")
    project.write("data/a.csv", "a\n")
    project.write("data/skip.txt", "no\n")
    project.write("logs/x/1.json", "1\n")
    project.write("logs/2.json", "2\n")
    project.pipeline(
        [
            {
                "name": "g",
                "uses": "shell",
                "inputs": ["data/*.csv", "logs/**/*.json"],
                "outputs": ["o.txt"],
                "params": {"cmd": "echo {inputs} > {output}"},
            }
        ]
    )
    project.run_json()
    assert project.read("o.txt") == "data/a.csv data/b.csv logs/2.json logs/x/1.json\n".replace(
        "data/", str(project.root / "data") + "/"
    ).replace("logs/", str(project.root / "logs") + "/")
    assert project.statuses(project.run_json()) == {"g": "skipped"}
    project.write("data/c.csv", "c\n")
    assert one_reason(project.run_json()) == "input 'data/*.csv' changed: 1 added (data/c.csv)"
    (project.root / "data/a.csv").unlink()
    assert one_reason(project.run_json()) == "input 'data/*.csv' changed: 1 removed (data/a.csv)"


def test_a_glob_matching_nothing_fails_its_stage(project: Project) -> None:
    project.pipeline(
        [
            {
                "name": "g",
                "uses": "shell",
                "inputs": ["data/*.csv"],
                "outputs": ["o.txt"],
                "params": {"cmd": "cat {inputs} > {output}"},
            }
        ]
    )
    summary = project.run_json(expect=1)
    assert one_reason(summary) == "input 'data/*.csv' matches no file"


def test_a_glob_output_and_a_record_stage_over_a_folder_are_config_errors(
    project: Project,
) -> None:
    project.write("data/raw/a.csv", "a\n")
    project.pipeline(
        [
            {
                "name": "g",
                "uses": "shell",
                "inputs": ["data/raw/a.csv"],
                "outputs": ["out/*.txt"],
                "params": {"cmd": "true"},
            },
            {"name": "r", "uses": "upper", "inputs": ["data/raw/"], "outputs": ["up.txt"]},
        ]
    )
    proc = project.cli("run")
    assert proc.returncode == 2, proc.stderr
    assert "'out/*.txt' is a glob; an output names one file or folder" in proc.stderr
    assert "'data/raw/' is a folder; record stage 'upper' reads and writes files" in proc.stderr


def test_a_rerun_reads_only_the_changed_file_of_a_folder(project: Project) -> None:
    for i in range(30):
        project.write(f"data/raw/f{i:02}.csv", f"{i}\n")
    split_pipeline(project)
    project.run_json()
    project.run_json()  # (outputs committed within the racy window are cached already)
    assert project.run_json()["metrics"]["hashed_files"] == 0
    project.write("data/raw/f07.csv", "changed\n")
    summary = project.run_json()
    assert one_reason(summary) == "input 'data/raw/' changed: 1 file changed (data/raw/f07.csv)"
    assert summary["metrics"]["hashed_files"] == 1


def test_one_path_as_a_file_and_a_folder_output_is_a_config_error(project: Project) -> None:
    project.write("in.txt", "x\n")
    project.pipeline(
        [
            {"name": "a", "uses": "copy", "inputs": ["in.txt"], "outputs": ["out"]},
            {
                "name": "b",
                "uses": "shell",
                "inputs": ["in.txt"],
                "outputs": ["out/"],
                "params": {"cmd": "true"},
            },
        ]
    )
    proc = project.cli("run")
    assert proc.returncode == 2, proc.stderr
    assert "'out/' is also written by stage 'a'" in proc.stderr


def test_a_folder_input_replaced_by_a_file_fails_its_stage_at_run(project: Project) -> None:
    project.write("data/raw/a.csv", "a\n")
    split_pipeline(project)
    project.run_json()
    (project.root / "data/raw/a.csv").unlink()
    (project.root / "data/raw").rmdir()
    project.write("data/raw", "now a file\n")  # (the plan cache still holds the folder)
    summary = project.run_json(expect=1)
    assert one_reason(summary) == "'data/raw/' is a file, not a folder: write it as 'data/raw'"
