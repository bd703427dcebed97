"""``pipekit checkpoints list | show | verify | restore | prune`` on a real
project: checkpoints saved by a real run (and by a manager over the same
store), the real CLI in subprocesses."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from conftest import Project
from pipekit import CheckpointManager
from pipekit.checkpoints import crypto
from pipekit.stores._file_checkpoint import FileCheckpointStore
from pipekit.stores._file_lock import FileLockBackend


def cli_json(project: Project, *args: str, expect: int = 0) -> Any:
    proc = project.cli("checkpoints", *args, "--json")
    assert proc.returncode == expect, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    return json.loads(proc.stdout)


def store_of(project: Project) -> FileCheckpointStore:
    return FileCheckpointStore(project.root / ".pipekit" / "checkpoints")


@pytest.fixture
def failed_resumable(project: Project) -> Project:
    """Stage ``r`` saved a checkpoint and failed (one attempt), so its
    checkpoint is kept; stage ``c`` saved none."""
    project.write("in.txt", "x\n")
    project.pipeline(
        [
            {
                "name": "r",
                "uses": "resumable",
                "inputs": ["in.txt"],
                "outputs": ["out.txt"],
                "retry": {"attempts": 1},
            },
            {"name": "c", "uses": "copy", "inputs": ["in.txt"], "outputs": ["c.txt"]},
        ],
        name="demo",
    )
    assert project.run_json(expect=1)["status"] == "failed"
    return project


def test_list_show_verify_restore_a_checkpoint_a_run_saved(failed_resumable: Project) -> None:
    project = failed_resumable
    listed = cli_json(project, "list")
    assert listed["pipeline"] == "demo"
    (cp,) = listed["checkpoints"]
    assert (cp["stage"], cp["namespace"], cp["kind"], cp["id"]) == (
        "r",
        "demo.r",
        "full",
        "00000001",
    )
    assert set(cp["metadata"]) == {"fingerprint"} and len(cp["sha256"]) == 64
    text = project.cli("checkpoints", "list")
    assert text.returncode == 0 and "stage 'r' (demo.r): 1 checkpoint(s)" in text.stdout
    assert "stage 'c'" not in text.stdout

    shown = cli_json(project, "show", "latest")
    assert shown["id"] == "00000001" and shown["stage"] == "r"
    text = project.cli("checkpoints", "show", "00000001", "--stage", "r")
    assert text.returncode == 0 and "namespace:    demo.r" in text.stdout

    assert cli_json(project, "verify")["ok"] is True
    text = project.cli("checkpoints", "verify")
    assert text.returncode == 0 and "1 checkpoint(s) verified" in text.stdout

    out = project.root / "restored.json"
    text = project.cli("checkpoints", "restore", "latest", "--to", str(out))
    assert text.returncode == 0, text.stderr
    assert json.loads(out.read_text()) == {"done_part": 1}
    again = project.cli("checkpoints", "restore", "latest", "--to", str(out))
    assert again.returncode == 2 and "exists; use --force" in again.stderr
    assert (
        project.cli("checkpoints", "restore", "latest", "--to", str(out), "--force").returncode == 0
    )
    to_stdout = project.cli("checkpoints", "--stage", "r", "restore", "00000001", "--to", "-")
    assert json.loads(to_stdout.stdout) == {"done_part": 1}

    # the next run resumes from it, commits, and clears it
    project.pipeline(
        [
            {
                "name": "r",
                "uses": "resumable",
                "inputs": ["in.txt"],
                "outputs": ["out.txt"],
                "params": {"fail_first": False},
            },
            {"name": "c", "uses": "copy", "inputs": ["in.txt"], "outputs": ["c.txt"]},
        ],
        name="demo",
    )
    project.run_json()
    assert cli_json(project, "list")["checkpoints"] == []
    assert project.cli("checkpoints", "list").stdout.strip() == "no checkpoints"
    assert (
        sorted(p.name for p in (project.root / ".pipekit/checkpoints").rglob("*") if p.is_file())
        == []
    )


def test_a_damaged_checkpoint_fails_verify_and_restore(failed_resumable: Project) -> None:
    project = failed_resumable
    blob = project.root / ".pipekit/checkpoints/demo.r/b-0000000001"
    raw = bytearray(blob.read_bytes())
    raw[-2] ^= 0x20
    blob.write_bytes(bytes(raw))
    report = cli_json(project, "verify", expect=1)
    assert report["ok"] is False
    (ns,) = [n for n in report["namespaces"] if n["checkpoints"]]
    assert ns["stage"] == "r" and not ns["checkpoints"][0]["ok"]
    assert "SHA-256" in ns["checkpoints"][0]["problem"]
    text = project.cli("checkpoints", "verify")
    assert text.returncode == 1 and "DAMAGED  stage 'r': 00000001" in text.stdout
    restore = project.cli("checkpoints", "restore", "00000001", "--to", str(project.root / "x"))
    assert restore.returncode == 1
    assert "checkpoint '00000001' of 'demo.r' is damaged" in restore.stderr
    assert "Traceback" not in restore.stderr and not (project.root / "x").exists()


def test_prune_keeps_the_newest_and_respects_the_stage_lock(failed_resumable: Project) -> None:
    project = failed_resumable
    m = CheckpointManager(store_of(project), "demo.r")
    for i in range(4):
        m.save({"i": i}, metadata={"epoch": i})
    assert [c["id"] for c in cli_json(project, "list", "--filter", "epoch=2")["checkpoints"]] == [
        "00000004"
    ]
    assert [c["id"] for c in cli_json(project, "list", "--sort=-seq")["checkpoints"]][:2] == [
        "00000005",
        "00000004",
    ]
    dry = cli_json(project, "prune", "--keep-last", "2", "--dry-run")
    (r,) = [n for n in dry["namespaces"] if n["stage"] == "r"]
    assert r["deleted"] == ["00000001", "00000002", "00000003"] and r["dry_run"]
    assert len(cli_json(project, "list")["checkpoints"]) == 5

    lease = FileLockBackend(project.root / ".pipekit" / "locks").lock("stage/demo/r", 60)
    assert lease.acquire(timeout=0)
    try:
        held = project.cli("checkpoints", "prune", "--keep-last", "2")
        assert held.returncode == 3 and "stage 'r' is running" in held.stderr
    finally:
        lease.release()
    text = project.cli("checkpoints", "prune", "--keep-last", "2")
    assert text.returncode == 0, text.stderr
    assert "stage 'r': deleted 00000001, 00000002, 00000003" in text.stdout
    assert [c["id"] for c in cli_json(project, "list")["checkpoints"]] == ["00000004", "00000005"]
    pruned = cli_json(project, "prune", "--max-age", "0")
    assert [n["deleted"] for n in pruned["namespaces"] if n["stage"] == "r"] == [["00000004"]]
    assert [c["id"] for c in cli_json(project, "list")["checkpoints"]] == ["00000005"]


def test_encrypted_checkpoints_need_the_key_to_restore(project: Project, tmp_path: Path) -> None:
    project.write("in.txt", "x\n")
    project.pipeline(
        [{"name": "s", "uses": "copy", "inputs": ["in.txt"], "outputs": ["o.txt"]}], name="demo"
    )
    key = tmp_path / "key"
    key.write_text(crypto.generate_key())
    other = tmp_path / "other"
    other.write_bytes(os.urandom(32))
    m = CheckpointManager(store_of(project), "demo.s", encryption={"key_file": str(key)})
    m.save({"secret": "data"})
    (cp,) = cli_json(project, "list")["checkpoints"]  # metadata needs no key
    assert cp["encrypted"] and cp["key_id"] == m.cipher.key_id
    assert cli_json(project, "verify")["ok"]  # nor does integrity
    out = str(project.root / "o.json")
    no_key = project.cli("checkpoints", "restore", "latest", "--to", out)
    assert no_key.returncode == 2 and "no key was given" in no_key.stderr
    wrong = project.cli("checkpoints", "restore", "latest", "--to", out, "--key-file", str(other))
    assert wrong.returncode == 2 and f"encrypted with key id {m.cipher.key_id}" in wrong.stderr
    env = project.env(PK_TEST_KEY=key.read_text())
    ok = project.cli(
        "checkpoints", "restore", "latest", "--to", out, "--key-env", "PK_TEST_KEY", env=env
    )
    assert ok.returncode == 0, ok.stderr
    assert json.loads(Path(out).read_text()) == {"secret": "data"}
    both = project.cli("checkpoints", "list", "--key-file", str(key), "--key-env", "X")
    assert both.returncode == 2 and "not both" in both.stderr


def test_namespaces_ids_and_errors(failed_resumable: Project) -> None:
    project = failed_resumable
    CheckpointManager(store_of(project), "demo.c").save({"c": 1})
    CheckpointManager(store_of(project), "my-script").save({"m": 1}, id="mine")
    ambiguous = project.cli("checkpoints", "show", "latest")
    assert ambiguous.returncode == 2 and "'latest' is ambiguous" in ambiguous.stderr
    dup = project.cli("checkpoints", "show", "00000001")
    assert dup.returncode == 2 and "stage 'r', stage 'c'" in dup.stderr
    assert cli_json(project, "show", "latest", "--stage", "c")["namespace"] == "demo.c"
    assert cli_json(project, "show", "mine", "--namespace", "my-script")["id"] == "mine"
    missing = project.cli("checkpoints", "show", "nope")
    assert missing.returncode == 2 and "no checkpoint 'nope' in any stage" in missing.stderr
    stage = project.cli("checkpoints", "list", "--stage", "zzz")
    assert stage.returncode == 2 and "no stage 'zzz'" in stage.stderr
    sort = project.cli("checkpoints", "list", "--sort", "colour")
    assert sort.returncode == 2 and "cannot sort checkpoints by 'colour'" in sort.stderr
    no_action = project.cli("checkpoints")
    assert no_action.returncode == 2
