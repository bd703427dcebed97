"""``--json`` outputs carry ``schema_version`` and, beside each prose
reason, a stable ``reason_code`` (issue 26)."""

from __future__ import annotations

import json

from conftest import Project
from pipekit.engine._results import REASON_CODES


def _codes(doc: dict) -> dict[str, str]:
    return {s["name"]: s["reason_code"] for s in doc["stages"]}


def _status(project: Project) -> dict:
    proc = project.cli("status", "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _two_stages(project: Project, cmd: str = "cp {input} {output}") -> None:
    project.pipeline(
        [
            {"name": "a", "uses": "shell", "inputs": ["in.txt"], "outputs": ["a.txt"],
             "params": {"cmd": cmd}},
            {"name": "b", "uses": "shell", "inputs": ["a.txt"], "outputs": ["b.txt"],
             "params": {"cmd": "cp {input} {output}"}},
        ]
    )  # fmt: skip


def test_run_json_keeps_its_contract_keys_and_adds_schema_version_and_codes(
    project: Project,
) -> None:
    project.write("in.txt", "one\n")
    _two_stages(project)
    first = project.run_json()
    assert first["schema_version"] == 1
    assert {"run_id", "status", "stages"} <= set(first)
    for stage in first["stages"]:
        assert {"name", "status", "duration_s", "reason", "reason_code"} <= set(stage)
    assert _codes(first) == {"a": "never_ran", "b": "never_ran"}
    assert _codes(project.run_json()) == {"a": "up_to_date", "b": "up_to_date"}
    project.write("in.txt", "two\n", age=5)
    assert _codes(project.run_json()) == {"a": "input_changed", "b": "input_changed"}
    assert _codes(project.run_json("--force", "a")) == {"a": "forced", "b": "up_to_date"}
    (project.root / "b.txt").unlink()
    assert _codes(project.run_json())["b"] == "output_missing"


def test_a_failure_and_what_it_stops_have_codes(project: Project) -> None:
    project.write("in.txt", "one\n")
    _two_stages(project, cmd="exit 3")
    assert _codes(project.run_json(expect=1)) == {"a": "failed", "b": "upstream_failed"}
    status = _status(project)
    assert status["schema_version"] == 1
    assert _codes(status) == {"a": "did_not_finish", "b": "upstream_will_run"}


def test_status_json_codes(project: Project) -> None:
    project.write("in.txt", "one\n")
    _two_stages(project)
    assert _codes(_status(project)) == {"a": "never_ran", "b": "upstream_will_run"}
    project.run_json()
    assert _codes(_status(project)) == {"a": "up_to_date", "b": "up_to_date"}
    _two_stages(project, cmd="cp {input} {output} && true")
    assert _codes(_status(project))["a"] == "params_changed"
    project.write("a.txt", "changed by hand\n", age=3)
    _two_stages(project)
    assert _codes(_status(project)) == {"a": "output_modified", "b": "upstream_will_run"}


def test_every_code_seen_is_a_known_one(project: Project) -> None:
    project.write("in.txt", "one\n")
    _two_stages(project)
    docs = [_status(project), project.run_json(), project.run_json(), _status(project)]
    for doc in docs:
        for stage in doc["stages"]:
            assert stage["reason_code"] in REASON_CODES, stage


def test_every_json_document_is_an_object_with_the_version(project: Project) -> None:
    """What were lists (dlq list, idem list, state history/backups, plugins)
    are objects holding the list, with schema_version like every other."""
    project.write("in.txt", "one\n")
    _two_stages(project)
    project.run_json()
    lists = {("dlq", "list", "--json"): "letters", ("idem", "list", "--json"): "records",
             ("state", "history", "--json"): "transactions",
             ("state", "backups", "--json"): "backups", ("plugins", "--json"): "plugins"}  # fmt: skip
    for args, key in lists.items():
        proc = project.cli(*args)
        assert proc.returncode == 0, proc.stderr
        doc = json.loads(proc.stdout)
        assert doc["schema_version"] == 1 and isinstance(doc[key], list), args
    for args in (["check", "--json"], ["doctor", "--json"], ["state", "show", "--json"]):
        proc = project.cli(*args)
        assert proc.returncode in (0, 1), proc.stderr
        assert json.loads(proc.stdout)["schema_version"] == 1, args
