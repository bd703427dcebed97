"""The seed behaviours of a rerunnable pipeline, through the real CLI."""

from __future__ import annotations

import json
import os
import time

from conftest import Project


def three_stage(project: Project, **upper_extra: object) -> None:
    project.write("data/in/a.txt", "alpha\nbeta\n")
    project.write("data/in/b.txt", "gamma\n")
    project.pipeline(
        [
            {
                "name": "copy-a",
                "uses": "copy",
                "inputs": ["data/in/a.txt"],
                "outputs": ["work/a.txt"],
            },
            {
                "name": "copy-b",
                "uses": "copy",
                "inputs": ["data/in/b.txt"],
                "outputs": ["work/b.txt"],
            },
            {
                "name": "upper",
                "uses": "upper",
                "inputs": ["work/a.txt"],
                "outputs": ["out/a.txt"],
                **upper_extra,
            },
            {
                "name": "join",
                "uses": "concat",
                "inputs": ["out/a.txt", "work/b.txt"],
                "outputs": ["out/all.txt"],
            },
        ]
    )


def test_first_run_produces_outputs_and_second_skips_with_reason(project: Project) -> None:
    three_stage(project)
    first = project.run_json()
    assert first["status"] == "ok"
    assert set(project.statuses(first).values()) == {"ok"}
    assert project.read("out/all.txt") == "ALPHA\nBETA\ngamma\n"
    assert all(r == "never run" for r in project.reasons(first).values())

    second = project.run_json()
    assert set(project.statuses(second).values()) == {"skipped"}
    assert all(r == "up to date" for r in project.reasons(second).values())
    assert second["run_id"] != first["run_id"]
    for stage in second["stages"]:
        assert set(stage) >= {"name", "status", "duration_s", "reason"}


def test_changing_one_input_reruns_exactly_the_downstream_stages(project: Project) -> None:
    three_stage(project)
    project.run_json()
    project.write("data/in/b.txt", "delta\n", age=0)
    summary = project.run_json()
    assert project.statuses(summary) == {
        "copy-a": "skipped",
        "copy-b": "ok",
        "upper": "skipped",
        "join": "ok",
    }
    assert project.reasons(summary)["copy-b"] == "input 'data/in/b.txt' changed"
    assert project.reasons(summary)["join"] == "input 'work/b.txt' changed"
    assert project.read("out/all.txt") == "ALPHA\nBETA\ndelta\n"


def test_same_content_rewritten_does_not_rerun(project: Project) -> None:
    three_stage(project)
    project.run_json()
    project.write("data/in/a.txt", "alpha\nbeta\n", age=0)  # new mtime, same bytes
    summary = project.run_json()
    assert set(project.statuses(summary).values()) == {"skipped"}


def test_changing_params_reruns_the_stage(project: Project) -> None:
    project.write("in.txt", "keep me\ndrop me\n")
    stages = [
        {
            "name": "f",
            "uses": "filter",
            "inputs": ["in.txt"],
            "outputs": ["out.txt"],
            "params": {"pattern": "keep"},
        }
    ]
    project.pipeline(stages)
    project.run_json()
    assert project.read("out.txt") == "keep me\n"
    stages[0]["params"] = {"pattern": "keep", "keep": False}
    project.pipeline(stages)
    summary = project.run_json()
    assert project.statuses(summary) == {"f": "ok"}
    assert project.reasons(summary)["f"] == "params changed"
    assert project.read("out.txt") == "drop me\n"


PLUGIN = """
import pipekit

class Shout(pipekit.RecordStage):
    name = "shout"
    version = "{version}"

    def process(self, record, params):
        yield record.upper() + "{suffix}"

@pipekit.hookimpl
def register_stages(register):
    register(Shout())
"""


def write_plugin(project: Project, version: str, suffix: str) -> None:
    project.write("plugins/shout_plugin.py", PLUGIN.format(version=version, suffix=suffix), age=0)


def plugin_env(project: Project) -> dict[str, str]:
    env = project.env()
    env["PIPEKIT_PLUGIN_MODULES"] += ",shout_plugin"
    env["PYTHONPATH"] = str(project.root / "plugins") + os.pathsep + env["PYTHONPATH"]
    return env


def test_changing_processor_version_reruns_the_stage(project: Project) -> None:
    project.write("in.txt", "x\n")
    project.pipeline([{"name": "v", "uses": "shout", "inputs": ["in.txt"], "outputs": ["out.txt"]}])
    os.utime(project.file, (time.time() - 10, time.time() - 10))  # old enough to be cached
    write_plugin(project, "1", "!")
    env = plugin_env(project)
    assert project.statuses(project.run_json(env=env)) == {"v": "ok"}
    assert project.statuses(project.run_json(env=env)) == {"v": "skipped"}
    write_plugin(project, "2", "!!")  # a developer bumps the version in the source
    bumped = project.run_json(env=env)
    assert project.statuses(bumped) == {"v": "ok"}
    assert project.reasons(bumped)["v"] == "processor version changed (1 -> 2)"
    assert project.read("out.txt") == "X!!\n"


def test_editing_a_project_processor_reruns_its_stages_and_an_installed_one_keeps_version(
    project: Project,
) -> None:
    """A processor that is a module of the project (PIPEKIT_PLUGIN_MODULES)
    has its source file's digest in its fingerprint: an edit without a
    version bump reruns its stages. An installed processor's does not."""
    project.write("in.txt", "x\n")
    project.pipeline(
        [
            {"name": "v", "uses": "shout", "inputs": ["in.txt"], "outputs": ["out.txt"]},
            {"name": "u", "uses": "upper", "inputs": ["in.txt"], "outputs": ["up.txt"]},
        ]
    )
    os.utime(project.file, (time.time() - 10, time.time() - 10))
    write_plugin(project, "1", "!")
    env = plugin_env(project)
    project.run_json(env=env)
    write_plugin(project, "1", "?")  # the code changes, the version does not
    summary = project.run_json(env=env)
    assert project.statuses(summary) == {"v": "ok", "u": "skipped"}
    assert project.reasons(summary)["v"] == "processor code changed"
    assert project.read("out.txt") == "X?\n"
    assert set(project.statuses(project.run_json(env=env)).values()) == {"skipped"}


def test_rerun_uses_the_plan_cache_without_reading_the_pipeline_file(project: Project) -> None:
    three_stage(project)
    os.utime(project.file, (time.time() - 10, time.time() - 10))
    project.run_json()
    os.chmod(project.file, 0)  # a parse would now fail; the cached plan answers
    try:
        summary = project.run_json()
    finally:
        os.chmod(project.file, 0o644)
    assert set(project.statuses(summary).values()) == {"skipped"}


def test_editing_the_pipeline_file_invalidates_the_plan_cache(project: Project) -> None:
    project.write("in.txt", "keep\ndrop\n")
    stages = [
        {
            "name": "f",
            "uses": "filter",
            "inputs": ["in.txt"],
            "outputs": ["out.txt"],
            "params": {"pattern": "keep"},
        }
    ]
    project.pipeline(stages)
    os.utime(project.file, (time.time() - 10, time.time() - 10))
    project.run_json()
    project.run_json()
    stages[0]["params"] = {"pattern": "drop"}
    project.pipeline(stages)
    summary = project.run_json()
    assert project.reasons(summary)["f"] == "params changed"
    assert project.read("out.txt") == "drop\n"


def test_deleted_output_reruns_its_stage_only(project: Project) -> None:
    three_stage(project)
    project.run_json()
    os.unlink(project.root / "work/b.txt")
    summary = project.run_json()
    assert project.statuses(summary) == {
        "copy-a": "skipped",
        "copy-b": "ok",
        "upper": "skipped",
        "join": "skipped",
    }
    assert project.reasons(summary)["copy-b"] == "output 'work/b.txt' is missing"


def test_edited_output_reruns_its_stage(project: Project) -> None:
    three_stage(project)
    project.run_json()
    project.write("out/a.txt", "tampered\n", age=0)
    summary = project.run_json()
    assert project.statuses(summary)["upper"] == "ok"
    assert project.reasons(summary)["upper"] == "output 'out/a.txt' was modified"
    assert project.read("out/a.txt") == "ALPHA\nBETA\n"
    # join's input is back to the content it last saw: it stays skipped
    assert project.statuses(summary)["join"] == "skipped"


def test_state_and_run_files_are_valid_json(project: Project) -> None:
    three_stage(project)
    summary = project.run_json()
    state_dir = project.root / ".pipekit"
    state = json.loads((state_dir / "state.json").read_text())
    assert set(state["stages"]) == {"copy-a", "copy-b", "upper", "join"}
    run = json.loads((state_dir / "runs" / f"{summary['run_id']}.json").read_text())
    assert run["status"] == "ok"
    assert run["metrics"]["stages_ok"] == 4
    assert [s["name"] for s in run["stages"]] == ["copy-a", "copy-b", "upper", "join"]
    for path in (state_dir / "idempotency").rglob("*.json"):
        assert json.loads(path.read_text())["status"] == "SUCCESS"


def test_unchanged_rerun_reads_no_input(project: Project) -> None:
    three_stage(project)
    project.run_json()
    project.run_json()  # outputs written by the first run are now cached too
    for p in project.root.rglob("*.txt"):
        os.chmod(p, 0)  # any read would now fail
    try:
        summary = project.run_json()
    finally:
        for p in project.root.rglob("*.txt"):
            os.chmod(p, 0o644)
    assert set(project.statuses(summary).values()) == {"skipped"}
    assert summary["metrics"]["hashed_files"] == 0


def test_status_says_why_each_stage_would_run(project: Project) -> None:
    three_stage(project)
    proc = project.cli("status", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert {s["name"]: s["status"] for s in doc["stages"]} == dict.fromkeys(
        ["copy-a", "copy-b", "upper", "join"], "will-run"
    )
    project.run_json()
    project.write("data/in/a.txt", "changed\n", age=0)
    doc = json.loads(project.cli("status", "--json").stdout)
    by_name = {s["name"]: s for s in doc["stages"]}
    assert by_name["copy-a"]["reason"] == "input 'data/in/a.txt' changed"
    assert by_name["upper"]["reason"] == "upstream stage 'copy-a' will run"
    assert by_name["copy-b"]["status"] == "up-to-date"
    # status ran nothing
    assert project.read("out/all.txt") == "ALPHA\nBETA\ngamma\n"


def test_status_exit_code_says_whether_anything_would_run(project: Project) -> None:
    three_stage(project)
    assert project.cli("status", "--exit-code").returncode == 1
    assert project.cli("status").returncode == 0  # without the flag: 0 whatever would run
    project.run_json()
    up_to_date = project.cli("status", "--exit-code", "--json")
    assert up_to_date.returncode == 0, up_to_date.stderr
    project.write("data/in/a.txt", "changed\n", age=0)
    stale = project.cli("status", "--exit-code", "--json")
    assert stale.returncode == 1 and json.loads(stale.stdout)["stages"], stale.stderr


def test_force_and_dry_run(project: Project) -> None:
    three_stage(project)
    project.run_json()
    dry = project.cli("run", "--dry-run", "--force", "upper")
    assert dry.returncode == 0
    assert "would run" in dry.stdout and "forced (--force)" in dry.stdout
    forced = project.run_json("--force", "upper")
    assert project.statuses(forced)["upper"] == "ok"
    assert project.reasons(forced)["upper"] == "forced (--force)"
    assert project.statuses(forced)["join"] == "skipped"  # same output content


def test_pipeline_json_file_has_the_same_schema(project: Project) -> None:
    project.write("in.txt", "hi\n")
    (project.root / "pipeline.json").write_text(
        json.dumps(
            {
                "stages": [
                    {"name": "u", "uses": "upper", "inputs": ["in.txt"], "outputs": ["out.txt"]}
                ]
            }
        )
    )
    summary = project.run_json()
    assert summary["status"] == "ok"
    assert project.read("out.txt") == "HI\n"


def test_human_output_names_every_stage(project: Project) -> None:
    three_stage(project)
    proc = project.cli("run")
    assert proc.returncode == 0
    for name in ("copy-a", "copy-b", "upper", "join"):
        assert name in proc.stdout
    assert "run ok: 4 ok, 0 skipped, 0 failed" in proc.stdout
    time.sleep(0)
