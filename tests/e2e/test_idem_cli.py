"""`pipekit idem`: the runner's stage records are ordinary idempotency
records; forgetting one makes its stage rerun."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from conftest import Project
from pipekit import IdempotencyManager
from pipekit.stores import IdemRecord
from pipekit.stores._file_idempotency import FileIdempotencyStore


def two_stages(project: Project) -> None:
    project.write("in.txt", "hello\n")
    project.pipeline(
        [
            {"name": "a", "uses": "copy", "inputs": ["in.txt"], "outputs": ["mid.txt"]},
            {"name": "b", "uses": "upper", "inputs": ["mid.txt"], "outputs": ["out.txt"]},
        ],
        name="demo",
    )


def idem_json(project: Project, *args: str, expect: int = 0) -> object:
    proc = project.cli("idem", *args, "--json")
    assert proc.returncode == expect, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    doc = json.loads(proc.stdout)
    return doc["records"] if args[:1] == ("list",) and expect == 0 else doc


def test_stage_records_are_listed_shown_and_forgotten(project: Project) -> None:
    two_stages(project)
    project.run_json()
    listed = idem_json(project, "list")
    assert [r["key"].rpartition(":")[0] for r in listed] == ["stage/demo/a", "stage/demo/b"]
    assert all(r["state"] == "SUCCESS" and r["expires"] is None for r in listed)
    key_a = next(r["key"] for r in listed if r["key"].startswith("stage/demo/a:"))
    op, _, fp = key_a.rpartition(":")
    assert op == "stage/demo/a" and len(fp) == 64

    shown = idem_json(project, "show", key_a)
    assert shown["key"] == key_a and shown["fingerprint"] == fp
    assert set(shown["result"]["outputs"]) == {"mid.txt"}

    text = project.cli("idem", "show", key_a)
    assert text.returncode == 0 and "SUCCESS" in text.stdout and "mid.txt" in text.stdout

    assert project.statuses(project.run_json()) == {"a": "skipped", "b": "skipped"}
    forgot = project.cli("idem", "forget", key_a)
    assert forgot.returncode == 0 and f"forgot {key_a}" in forgot.stdout

    status = json.loads(project.cli("status", "--json").stdout)
    reasons = {s["name"]: (s["status"], s["reason"]) for s in status["stages"]}
    assert reasons["a"][0] == "will-run" and "idempotency store" in reasons["a"][1]

    again = project.run_json()
    assert project.statuses(again) == {"a": "ok", "b": "skipped"}  # b's input is unchanged
    assert project.statuses(project.run_json()) == {"a": "skipped", "b": "skipped"}


def test_forgetting_through_the_python_api_reruns_the_stage_too(project: Project) -> None:
    two_stages(project)
    project.run_json()
    project.run_json()  # the state now answers alone for both stages
    m = IdempotencyManager(project.root / ".pipekit" / "idempotency")
    [key_b] = [s.key for s in m.list("stage/demo/b:")]
    assert m.forget(key_b)
    assert project.statuses(project.run_json()) == {"a": "skipped", "b": "ok"}
    assert (project.root / "out.txt").read_text() == "HELLO\n"


def test_a_wiped_store_reruns_everything(project: Project) -> None:
    two_stages(project)
    project.run_json()
    project.run_json()
    shutil.rmtree(project.root / ".pipekit" / "idempotency")
    assert project.statuses(project.run_json()) == {"a": "ok", "b": "ok"}


def test_unknown_keys_are_errors_without_traceback(project: Project) -> None:
    two_stages(project)
    project.run_json()
    for args in (("show", "stage/demo/a:nope"), ("forget", "stage/demo/a:nope")):
        proc = project.cli("idem", *args)
        assert proc.returncode == 1, proc
        assert "no live record for key 'stage/demo/a:nope'" in proc.stderr
        assert "pipekit idem list" in proc.stderr and "Traceback" not in proc.stderr
    assert project.statuses(project.run_json()) == {"a": "skipped", "b": "skipped"}


def test_sweep_removes_expired_records(project: Project) -> None:
    two_stages(project)
    project.run_json()
    store = FileIdempotencyStore(project.root / ".pipekit" / "idempotency")
    store.put_many([IdemRecord("op:old", "FAILED", "fp", expires=time.time() - 1)])
    assert idem_json(project, "sweep") == {"schema_version": 1, "removed": 1}
    text = project.cli("idem", "sweep")
    assert text.returncode == 0 and "removed 0 expired record(s)" in text.stdout
    assert len(idem_json(project, "list")) == 2  # the stage records never expire


def test_list_filters_by_prefix_and_prints_a_table(project: Project) -> None:
    two_stages(project)
    project.run_json()
    assert [
        r["key"].split(":")[0] for r in idem_json(project, "list", "--prefix", "stage/demo/b")
    ] == ["stage/demo/b"]
    text = project.cli("idem", "list")
    assert text.returncode == 0
    lines = text.stdout.splitlines()
    assert len(lines) == 3 and all(line.startswith("SUCCESS") for line in lines[:2])
    assert "never" in lines[0] and lines[2].startswith("2 record(s) in")


def test_without_a_pipeline_the_default_store_or_dir(tmp_path: Path, project: Project) -> None:
    bare, other = tmp_path / "bare", tmp_path / "other"
    bare.mkdir()
    other.mkdir()
    env = project.env()
    env.pop("PIPEKIT_IDEMPOTENCY_DIR", None)
    code = "import pipekit\n@pipekit.idempotent\ndef f(x: int) -> int:\n    return x\nf(1)\n"
    subprocess.run([sys.executable, "-c", code], cwd=bare, env=env, check=True)

    def idem(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pipekit", "idem", *args],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
        )

    def ops(proc: subprocess.CompletedProcess[str]) -> list[str]:
        assert proc.returncode == 0, proc.stderr
        return [r["key"].rpartition(":")[0] for r in json.loads(proc.stdout)["records"]]

    store = str(bare / ".pipekit" / "idempotency")
    assert ops(idem(bare, "list", "--json")) == ["__main__.f"]  # ./.pipekit/idempotency
    assert ops(idem(other, "list", "--json")) == []
    assert ops(idem(other, "list", "--json", "--dir", store)) == ["__main__.f"]
    env["PIPEKIT_IDEMPOTENCY_DIR"] = store
    assert ops(idem(other, "list", "--json")) == ["__main__.f"]
    missing = idem(other, "list", "--dir", str(other / "nope"))
    assert missing.returncode == 1 and "no such folder" in missing.stderr


def test_wrong_arguments_are_usage_errors(tmp_path: Path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    from pipekit.cli._main import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PIPEKIT_IDEMPOTENCY_DIR", raising=False)
    for argv, message in [
        (["idem", "show"], "exactly one KEY"),
        (["idem", "show", "a", "b"], "exactly one KEY"),
        (["idem", "forget"], "one KEY or more"),
        (["idem", "list", "k"], "takes no KEY"),
        (["idem", "sweep", "--prefix", "x"], "--prefix goes with pipekit idem list"),
    ]:
        assert main(argv) == 2, argv
        assert message in capsys.readouterr().err
    assert main(["idem", "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["records"] == []
