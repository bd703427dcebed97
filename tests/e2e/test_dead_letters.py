"""Failed records: retries, the dead-letter queue, max_failures, `pipekit dlq`."""

from __future__ import annotations

import base64
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

from conftest import Project

FAST_RETRY = {"attempts": 3, "backoff": 0.0, "jitter": 0.0}


def poison_inputs(project: Project) -> dict[bytes, tuple[str, int, int, int]]:
    """Two inputs with poison records at known places; returns each poison
    record's raw bytes -> (input, input index, byte offset, line)."""
    a_lines = [f"a{i:04d}".encode() for i in range(300)]
    a_lines[10] = b"poison ten"
    a_lines[150] = "poison caf\u00e9".encode()
    a_lines[151] = b"transient one"
    a_lines[200] = b"fatal two hundred"
    b_lines = [f"b{i:04d}".encode() for i in range(100)]
    b_lines[0] = b"poison \xff raw bytes"
    b_lines[99] = b"poison last"
    project.write("in/a.txt", b"\n".join(a_lines) + b"\n")
    project.write("in/b.txt", b"\n".join(b_lines))  # no newline at the end
    where = {}
    for key, index, lines in (("in/a.txt", 0, a_lines), ("in/b.txt", 1, b_lines)):
        offset = 0
        for n, line in enumerate(lines, 1):
            if line.startswith((b"poison", b"fatal")):
                where[line] = (key, index, offset, n)
            offset += len(line) + 1
    return where


def stages(project: Project, **extra: Any) -> list[dict[str, Any]]:
    return [
        {
            "name": "p",
            "uses": "poison",
            "inputs": ["in/a.txt", "in/b.txt"],
            "outputs": ["out/p.txt"],
            "params": {"calls": str(project.root / "calls.txt")},
            "record_retry": FAST_RETRY,
            **extra,
        },
        {"name": "down", "uses": "upper", "inputs": ["out/p.txt"], "outputs": ["out/down.txt"]},
    ]


def dlq(project: Project, *args: str, env: dict[str, str] | None = None, expect: int = 0) -> Any:
    proc = project.cli("dlq", *args, "--json", env=env)
    assert proc.returncode == expect, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    doc = json.loads(proc.stdout)
    return doc["letters"] if args[:1] == ("list",) else doc


def test_poison_records_are_dead_lettered_with_positions_and_retry_drains_them(
    project: Project,
) -> None:
    where = poison_inputs(project)
    project.pipeline(stages(project, max_failures=10))
    summary = project.run_json()
    assert project.statuses(summary) == {"p": "ok", "down": "ok"}
    records = summary["stages"][0]["records"]
    assert records["records_in"] == 400
    assert records["records_dead_lettered"] == 5
    assert records["records_retried"] == 1  # 'transient one' succeeded on its second try
    assert records["records_failed"] == 6
    assert records["records_out"] == 395
    assert summary["metrics"]["records_dead_lettered"] == 5
    run = json.loads((project.root / ".pipekit/runs" / f"{summary['run_id']}.json").read_text())
    assert run["metrics"]["records_dead_lettered"] == 5
    assert run["stages"][0]["info"]["records_dead_lettered"] == 5

    out = (project.root / "out/p.txt").read_bytes().splitlines()
    assert b"ok transient one" in out and not any(b"poison" in x or b"fatal" in x for x in out)

    letters = dlq(project, "list")
    got = {}
    for letter in letters:
        raw = (
            letter["record"].encode()
            if letter["record"] is not None
            else base64.b64decode(letter["record_base64"])
        )
        got[raw] = (letter["input"], letter["input_index"], letter["offset"], letter["line"])
        assert letter["stage"] == "p" and letter["format"] == "lines"
        assert "traceback" not in letter
    assert got == where
    by_record = {x["record"]: x for x in letters}
    assert by_record["fatal two hundred"]["attempts"] == 1  # non_retryable: one try
    assert by_record["fatal two hundred"]["error_type"] == "PermissionError"
    assert by_record["poison ten"]["attempts"] == 3
    assert by_record["poison ten"]["message"] == "cannot digest 'poison ten'"
    calls = (project.root / "calls.txt").read_text(errors="surrogateescape").splitlines()
    assert calls.count("poison ten") == 3 and calls.count("fatal two hundred") == 1

    shown = dlq(project, "show", str(by_record["poison ten"]["id"]))
    assert "ValueError: cannot digest 'poison ten'" in shown["traceback"]
    text = project.cli("dlq", "list")
    assert "in/a.txt:11 (byte 60)" in text.stdout and "5 dead letter(s)" in text.stdout

    # a fixed processor: every dead letter succeeds and is appended once
    fixed = project.env(PIPEKIT_TEST_FIXED="1")
    report = dlq(project, "retry", env=fixed)
    assert report["status"] == "ok"
    assert report["stages"] == [
        {
            "stage": "p",
            "retried": 5,
            "succeeded": 5,
            "still_failing": 0,
            "appended_records": 5,
            "output": "out/p.txt",
            "outdated": 0,
            "skipped": None,
            "skipped_code": None,
            "reason_code": None,
        }
    ]
    assert dlq(project, "list") == []
    assert not [p for p in (project.root / "out").iterdir() if "pipekit-tmp" in p.name]
    lines = (project.root / "out/p.txt").read_bytes().splitlines()
    inputs = (project.root / "in/a.txt").read_bytes().splitlines() + (
        project.root / "in/b.txt"
    ).read_bytes().splitlines()
    assert sorted(lines) == sorted(b"ok " + x for x in inputs), "every record exactly once"
    assert lines[-5:] == [b"ok " + r for r in sorted(where, key=lambda r: where[r][1:3])]
    again = project.run_json()
    assert project.statuses(again) == {"p": "skipped", "down": "ok"}
    assert project.reasons(again)["down"] == "input 'out/p.txt' changed"
    assert dlq(project, "retry") == {
        "schema_version": 1,
        "pipeline": project.root.name,
        "status": "ok",
        "stages": [],
    }


def test_retry_keeps_what_still_fails_and_purge_removes(project: Project) -> None:
    poison_inputs(project)
    project.pipeline(stages(project, max_failures=10))
    project.run_json()
    report = dlq(project, "retry", "--stage", "p", expect=1)  # not fixed: all still fail
    assert report["stages"][0]["succeeded"] == 0
    assert report["stages"][0]["still_failing"] == 5
    letters = dlq(project, "list", "--stage", "p")
    assert {x["record"]: x["attempts"] for x in letters}["poison ten"] == 6
    before = (project.root / "out/p.txt").read_bytes()
    assert project.run_json()["stages"][0]["status"] == "skipped"
    assert (project.root / "out/p.txt").read_bytes() == before
    assert dlq(project, "purge", "--stage", "p") == {
        "schema_version": 1,
        "pipeline": project.root.name,
        "stage": "p",
        "purged": 5,
    }
    assert dlq(project, "list") == []
    proc = project.cli("dlq", "show", "1")
    assert proc.returncode == 2 and "no dead letter 1" in proc.stderr


def test_max_failures_fails_the_stage_and_a_rerun_resumes_from_its_checkpoint(
    project: Project,
) -> None:
    lines = [f"r{i:05d}" for i in range(5000)]
    lines[3500] = "poison 3500"
    project.write("in.txt", "\n".join(lines) + "\n")
    calls = project.root / "calls.txt"
    stage = {
        "name": "p",
        "uses": "poison",
        "inputs": ["in.txt"],
        "outputs": ["out.txt"],
        "params": {"calls": str(calls)},
        "record_retry": FAST_RETRY,
        "checkpoint": {"every_records": 1000},
    }
    project.pipeline([stage])  # max_failures defaults to 0
    summary = project.run_json(expect=1)
    reason = summary["stages"][0]["reason"]
    assert "record 3501 of in.txt" in reason and "more than max_failures = 0" in reason
    assert "resumes from it on the next run" in reason
    assert summary["stages"][0]["reason"].startswith("failed after 1 attempt(s)")
    assert [x["record"] for x in dlq(project, "list")] == ["poison 3500"]
    assert not (project.root / "out.txt").exists()
    status = json.loads(project.cli("status", "--json").stdout)["stages"][0]
    assert status["resume"]["record"] == 3000
    assert "will resume from record 3,000" in status["reason"]

    calls.write_text("")
    project.pipeline([dict(stage, max_failures=1)])  # not part of the fingerprint
    summary = project.run_json()
    records = summary["stages"][0]["records"]
    assert records["resumed_from"] == 3000
    assert records["records_in"] == 5000
    assert records["records_dead_lettered"] == 1
    seen = calls.read_text().splitlines()
    assert seen[0] == "r03000" and "r02999" not in seen, "the first 3000 records are not redone"
    out = (project.root / "out.txt").read_text().splitlines()
    assert out == [f"ok {x}" for x in lines if not x.startswith("poison")]
    letters = dlq(project, "list")
    assert [x["record"] for x in letters] == ["poison 3500"], "replaced, not doubled"
    assert letters[0]["run_id"] == summary["run_id"]


def test_a_fraction_of_failures_is_allowed(project: Project) -> None:
    lines = [f"r{i:04d}" if i % 50 else f"poison {i}" for i in range(1000)]
    project.write("in.txt", "\n".join(lines) + "\n")
    stage = {
        "name": "p",
        "uses": "poison",
        "inputs": ["in.txt"],
        "outputs": ["out.txt"],
        "record_retry": {"attempts": 1},
    }
    project.pipeline([dict(stage, max_failures="2%")])  # 20 of 1000: exactly 2%
    summary = project.run_json()
    assert summary["stages"][0]["records"]["records_dead_lettered"] == 20
    project.pipeline([dict(stage, max_failures=0.019)])
    proc = project.cli("run", "--json", "--force", "p")
    assert proc.returncode == 1
    assert "more than max_failures = 1.9% of the records read" in proc.stdout


def test_observers_see_failed_records_in_a_worker_process_and_sigterm_checkpoints(
    project: Project,
) -> None:
    """A record stage with a timeout runs in a worker process: it
    dead-letters, calls on_record_failed there, and on an interrupt stops
    with a checkpoint that the next run resumes from."""
    log = project.root / "observed.jsonl"
    env = project.env(PIPEKIT_OBSERVER_LOG=str(log))
    env["PIPEKIT_PLUGIN_MODULES"] += ",pipekit_observer"
    lines = [f"r{i:06d}" for i in range(60_000)]
    lines[5] = "poison five"
    project.write("in.txt", "\n".join(lines) + "\n")
    marker = project.root / "started"
    project.pipeline(
        [
            {
                "name": "slow",
                "uses": "slow-upper",
                "inputs": ["in.txt"],
                "outputs": ["slow.txt"],
                "params": {"sleep_every": 50, "sleep_s": 0.001, "marker": str(marker)},
                "timeout": 120,
                "checkpoint": {"every_records": 500},
            },
            {
                "name": "p",
                "uses": "poison",
                "inputs": ["in.txt"],
                "outputs": ["p.txt"],
                "timeout": 120,
                "max_failures": 5,
                "record_retry": FAST_RETRY,
            },
        ]
    )
    proc = project.popen("run", "--json", "-k", env=env)
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate()
    assert proc.returncode == 130, err
    first = json.loads(out)["stages"][0]
    assert first["status"] == "failed" and "checkpointed at record" in first["reason"], first
    summary = project.run_json("-k", env=env)
    assert project.statuses(summary) == {"slow": "ok", "p": "ok"}
    assert summary["stages"][0]["records"]["resumed_from"] > 0
    assert (project.root / "slow.txt").read_text() == "".join(x.upper() + "\n" for x in lines)
    failed = [json.loads(x) for x in log.read_text().splitlines()]
    failed = [x for x in failed if x["hook"] == "on_record_failed"]
    assert [x["record"] for x in failed] == ["poison five"] * 3
    assert [x["record"] for x in dlq(project, "list")] == ["poison five"]


def test_jsonl_records_bad_json_and_failing_values(project: Project) -> None:
    project.write(
        "in.jsonl",
        '{"a": 1}\n\n{"bad": true}\nnot json\n  \n[1, 2]\n"s"\n',
    )
    project.pipeline(
        [
            {
                "name": "j",
                "uses": "json-tag",
                "inputs": ["in.jsonl"],
                "outputs": ["out.jsonl"],
                "max_failures": 2,
                "record_retry": FAST_RETRY,
            }
        ]
    )
    summary = project.run_json()
    records = summary["stages"][0]["records"]
    assert records["records_in"] == 5 and records["records_dead_lettered"] == 2
    out = [json.loads(x) for x in (project.root / "out.jsonl").read_text().splitlines()]
    assert out == [
        {"tagged": True, "value": {"a": 1}},
        {"tagged": True, "value": [1, 2]},
        {"tagged": True, "value": "s"},
    ]
    letters = {x["record"]: x for x in dlq(project, "list")}
    assert letters["not json"]["error_type"] == "JSONDecodeError"
    assert letters["not json"]["attempts"] == 1 and letters["not json"]["line"] == 4
    assert letters['{"bad": true}']["attempts"] == 3 and letters['{"bad": true}']["offset"] == 10


def test_processor_state_is_kept_through_checkpoints(project: Project) -> None:
    lines = [f"r{i:06d}" for i in range(30_000)]
    project.write("in.txt", "\n".join(lines) + "\n")
    project.pipeline(
        [
            {
                "name": "n",
                "uses": "numbered",
                "inputs": ["in.txt"],
                "outputs": ["out.txt"],
                "checkpoint": {"every_records": 700},
            }
        ]
    )

    store = project.root / ".pipekit" / "checkpoints" / "proj.n"

    def blobs() -> set[str]:
        return {p.name for p in store.glob("b-*")} if store.exists() else set()

    def index_mtime() -> int:
        try:
            return (store / "_index").stat().st_mtime_ns
        except FileNotFoundError:
            return 0

    for _ in range(2):
        before = blobs()
        proc = project.popen("run")
        deadline = time.monotonic() + 60

        def waiting() -> None:
            assert proc.poll() is None and time.monotonic() < deadline, "no checkpoint saved"
            time.sleep(0.002)

        # a checkpoint this run saved and committed (its blob is new, and the
        # index was written after it was seen), not a moment counted: a busy
        # machine may take long; the kill comes well before the processor's
        # own ~1.5 s of sleeps are over
        while not blobs() - before:
            waiting()
        seen = index_mtime()
        while index_mtime() == seen:
            waiting()
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    summary = project.run_json()
    assert summary["status"] == "ok"
    assert summary["stages"][0]["records"]["resumed_from"], "the last kill was mid-stage"
    want = "".join(f"{i} {x}\n" for i, x in enumerate(lines, 1))
    assert (project.root / "out.txt").read_text() == want


def test_dlq_retry_finishes_or_drops_what_a_killed_retry_left(project: Project) -> None:
    """An intent whose output was replaced is finished (letters removed, the
    stage stays up to date); one whose output was not is dropped."""
    import hashlib

    poison_inputs(project)
    project.pipeline(stages(project, max_failures=10))
    project.run_json()
    letters = dlq(project, "list")
    out = project.root / "out/p.txt"
    ids = [letters[0]["id"], letters[1]["id"]]
    key = next(
        json.loads(p.read_text())["key"]
        for p in (project.root / ".pipekit/idempotency").rglob("*.json")
        if json.loads(p.read_text())["result"]["stage"] == "p"
    )
    new = out.read_bytes() + b"ok recovered\n"
    intents = project.root / ".pipekit/dlq-retry"
    intents.mkdir()
    state = json.loads((project.root / ".pipekit/state.json").read_text())
    intent = {
        "pipeline": project.root.name,
        "stage": "p",
        "ids": ids,
        "output": "out/p.txt",
        "path": str(out),
        "sha256": hashlib.sha256(new).hexdigest(),
        "key": key,
        "fingerprint": state["stages"]["p"]["fingerprint"],
        "token": None,
    }
    # killed before the rename: the output is the old one
    (intents / "p.json").write_text(json.dumps(intent))
    proc = project.cli("dlq", "purge", "--stage", "nothing-here")
    assert "dropped an interrupted retry of stage 'p'" in proc.stderr
    assert len(dlq(project, "list")) == 5
    # killed after the rename: finish it
    (intents / "p.json").write_text(json.dumps(intent))
    out.write_bytes(new)
    proc = project.cli("dlq", "retry", "--stage", "down")
    assert "finished an interrupted retry of stage 'p'" in proc.stderr, proc.stderr
    assert len(dlq(project, "list")) == 3
    assert not list(intents.iterdir())
    assert project.statuses(project.run_json()) == {"p": "skipped", "down": "ok"}


def test_a_stage_that_is_not_up_to_date_is_not_retried(project: Project) -> None:
    poison_inputs(project)
    project.pipeline(stages(project, max_failures=10))
    project.run_json()
    os.unlink(project.root / "out/p.txt")
    report = dlq(project, "retry", env=project.env(PIPEKIT_TEST_FIXED="1"), expect=1)
    assert "is not up to date (output 'out/p.txt' is missing)" in report["stages"][0]["skipped"]
    assert report["stages"][0]["skipped_code"] == "not_up_to_date"
    assert report["stages"][0]["reason_code"] == "output_missing"
    assert len(dlq(project, "list")) == 5


def test_dead_letters_are_kept_by_stage_and_pipeline(project: Project, tmp_path: Path) -> None:
    poison_inputs(project)
    project.pipeline(stages(project, max_failures=10), name="one")
    project.run_json()
    other = project.root / "other.toml"
    text = project.file.read_text().replace('name = "one"', 'name = "two"')
    other.write_text(text.replace("out/", "out2/"))
    assert project.cli("run", "-f", str(other)).returncode == 0
    assert len(dlq(project, "list")) == 5
    assert (
        len(json.loads(project.cli("dlq", "list", "--json", "-f", str(other)).stdout)["letters"])
        == 5
    )
    dlq(project, "purge")
    assert dlq(project, "list") == []
    assert (
        len(json.loads(project.cli("dlq", "list", "--json", "-f", str(other)).stdout)["letters"])
        == 5
    )
