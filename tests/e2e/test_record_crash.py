"""Record stages resume exactly once after any crash: SIGKILL and SIGTERM at
random instants, including inside checkpoint writes and output syncs (the
``slowfile`` backend makes those slow and logs where each kill landed)."""

from __future__ import annotations

import json
import os
import random
import signal
import time
from pathlib import Path

from conftest import Project

N_A = 60_000
N_B = 40_000


def record_inputs(project: Project) -> None:
    """Two inputs, 100,000 records: ASCII, non-ASCII, bytes that are not
    UTF-8, empty lines, CRLF, and a last line without its newline."""
    a = bytearray()
    for i in range(N_A):
        if i % 997 == 0:
            a += b"\n"
        elif i % 991 == 0:
            a += f"caf\u00e9 {i} \u2603".encode() + b"\n"
        elif i % 983 == 0:
            a += b"raw \xff\xfe " + str(i).encode() + b"\n"
        elif i % 977 == 0:
            a += f"crlf {i}".encode() + b"\r\n"
        else:
            a += f"line {i:06d} of input a".encode() + b"\n"
    b = "".join(f"b-line {i:06d}\n" for i in range(N_B - 1)) + "last line, no newline"
    project.write("in/a.txt", bytes(a))
    project.write("in/b.txt", b)


def pipeline(project: Project, sleep_every: int = 200, backend: str = "slowfile") -> None:
    project.pipeline(
        [
            {
                "name": "up",
                "uses": "slow-upper",
                "inputs": ["in/a.txt", "in/b.txt"],
                "outputs": ["out/up.txt"],
                "params": {
                    "sleep_every": sleep_every,
                    "sleep_s": 0.001,
                    "marker": str(project.root / "started"),
                },
                "checkpoint": {"every_records": 500},
            }
        ],
        backend={"name": backend},
    )


def env_for(project: Project, log: Path) -> dict[str, str]:
    env = project.env(
        PIPEKIT_TEST_SLOW_SYNC="1",
        PIPEKIT_TEST_SLOW_LOG=str(log),
        PIPEKIT_TEST_SLOW_S="0.002",
    )
    env["PIPEKIT_PLUGIN_MODULES"] += ",pipekit_slowbackend"
    return env


def reference_output(tmp_path: Path) -> bytes:
    """The output of an uninterrupted run of the same pipeline."""
    ref = Project(tmp_path / "reference")
    ref.root.mkdir()
    record_inputs(ref)
    pipeline(ref)
    summary = ref.run_json(env=env_for(ref, tmp_path / "ref.log"))
    assert summary["status"] == "ok"
    assert summary["stages"][0]["records"]["records_in"] == N_A + N_B
    return (ref.root / "out/up.txt").read_bytes()


def landed_inside(log: Path) -> bool:
    """Whether the last kill landed inside a checkpoint put or an output sync."""
    lines = log.read_text().split("\n") if log.exists() else []
    lines = [x for x in lines if x]
    return bool(lines) and lines[-1].startswith("begin")


def no_partial_under_final_name(project: Project, want: bytes) -> None:
    out = project.root / "out/up.txt"
    if out.exists():
        assert out.read_bytes() == want, "a partial output under its final name"


def wait_for(path: Path, proc: object, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:  # type: ignore[attr-defined]
            return False
        time.sleep(0.005)
    return True


def test_sigkill_at_random_instants_every_record_appears_exactly_once(
    project: Project, tmp_path: Path
) -> None:
    want = reference_output(tmp_path)
    record_inputs(project)
    pipeline(project)
    log = tmp_path / "slow.log"
    env = env_for(project, log)
    rng = random.Random(20261123)
    kills = inside = completions = resumed_completions = 0
    marker = project.root / "started"
    rounds = 0
    while kills < 30:
        rounds += 1
        assert rounds < 200, f"only {kills} kills landed in {rounds} runs"
        marker.unlink(missing_ok=True)
        log.write_text("")
        proc = project.popen("run", "--json", env=env)
        if kills % 2 == 0:
            time.sleep(rng.uniform(0.0, 0.9))  # from launch: start-up, lock, decide, work
        elif wait_for(marker, proc):
            time.sleep(rng.uniform(0.0, 0.5))  # while records are processed
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
            inside += landed_inside(log)
        out, err = proc.communicate()
        assert "Traceback" not in err, err
        no_partial_under_final_name(project, want)
        if proc.returncode == 0:
            records = json.loads(out)["stages"][0].get("records") or {}
            resumed_completions += bool(records.get("resumed_from"))
        if (project.root / "out/up.txt").exists():  # done (checked above): start over
            completions += 1
            os.unlink(project.root / "out/up.txt")
    summary = project.run_json(env=env)
    assert summary["status"] == "ok"
    assert (project.root / "out/up.txt").read_bytes() == want
    assert [p.name for p in (project.root / "out").iterdir()] == ["up.txt"], "no partial left"
    assert inside >= 3, f"only {inside} of {kills} kills landed in a checkpoint write or sync"
    assert resumed_completions + bool(summary["stages"][0]["records"]["resumed_from"]) >= 1
    again = project.run_json(env=env)
    assert project.statuses(again) == {"up": "skipped"}


def test_sigterm_at_random_instants_checkpoints_exits_130_and_resumes(
    project: Project, tmp_path: Path
) -> None:
    want = reference_output(tmp_path)
    record_inputs(project)
    pipeline(project)
    log = tmp_path / "slow.log"
    env = env_for(project, log)
    rng = random.Random(130)
    signals = 0
    marker = project.root / "started"
    resumed_at: list[int] = []
    rounds = 0
    while signals < 30:
        rounds += 1
        assert rounds < 200, f"only {signals} signals landed in {rounds} runs"
        marker.unlink(missing_ok=True)
        proc = project.popen("run", "--json", env=env)
        assert wait_for(marker, proc) or proc.poll() is not None
        time.sleep(rng.uniform(0.0, 0.4))
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            signals += 1
            out, err = proc.communicate()
            assert "Traceback" not in err, err
            summary = json.loads(out)
            if proc.returncode in (0, -signal.SIGTERM):
                # it came after the run had ended (and was recorded)
                assert summary["status"] == "ok", (out, err)
                continue
            assert proc.returncode == 130, (proc.returncode, err)
            assert summary["status"] == "interrupted"
            if summary["stages"][0]["status"] == "failed":  # stopped mid-stage
                assert "run the same command again" in err
                m = [line for line in err.splitlines() if "resumes from record" in line]
                assert m, err
                resumed_at.append(int(m[0].rsplit("record ", 1)[1].rstrip(")").replace(",", "")))
        else:
            out, err = proc.communicate()
            assert proc.returncode == 0, err
        no_partial_under_final_name(project, want)
        if (project.root / "out/up.txt").exists():
            assert (project.root / "out/up.txt").read_bytes() == want
            os.unlink(project.root / "out/up.txt")
    assert len(resumed_at) >= 20, resumed_at
    summary = project.run_json(env=env)
    assert (project.root / "out/up.txt").read_bytes() == want
    assert summary["status"] == "ok"
    assert_recorded_hash_is_right(project, "up", "out/up.txt")


def test_a_resumed_run_does_not_reread_what_it_had_done(project: Project) -> None:
    """Kill (SIGTERM) late in the run: the resumed run reads only the rest of
    the input (its own byte count), and the output is complete."""
    record_inputs(project)
    pipeline(project, sleep_every=100, backend="file")
    env = project.env()
    marker = project.root / "started"
    proc = project.popen("run", "--json", env=env)
    assert wait_for(marker, proc)
    time.sleep(0.9)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate()
    assert proc.returncode == 130, err
    stage = json.loads(out)["stages"][0]
    assert stage["status"] == "failed", "the stage should still be running after 0.9 s"
    status = json.loads(project.cli("status", "--json", env=env).stdout)["stages"][0]
    resume = status["resume"]
    assert resume["kind"] == "records" and resume["record"] > 0
    assert "will resume from record" in status["reason"]
    total = sum(p.stat().st_size for p in (project.root / "in").iterdir())
    done = resume["input_fraction"] * total
    summary = project.run_json(env=env)
    records = summary["stages"][0]["records"]
    assert records["resumed_from"] == resume["record"]
    assert records["input_bytes_read"] <= total - done + 2 * (1 << 20)  # one read of slack
    assert records["input_bytes_read"] < total
    assert records["records_in"] == N_A + N_B
    expected = (project.root / "in/a.txt").read_bytes() + (project.root / "in/b.txt").read_bytes()
    assert (project.root / "out/up.txt").read_bytes() == _upper_lines(expected)
    assert_recorded_hash_is_right(project, "up", "out/up.txt")


def assert_recorded_hash_is_right(project: Project, stage: str, output: str) -> None:
    """The output hash the commit recorded (hashed while it was written, the
    resumed prefix read back) is the hash of the file."""
    import hashlib

    state = json.loads((project.root / ".pipekit/state.json").read_text())
    want = hashlib.sha256((project.root / output).read_bytes()).hexdigest()
    assert state["stages"][stage]["outputs"][output] == want


def _upper_lines(data: bytes) -> bytes:
    """What slow-upper makes of the inputs: each line upper-cased (as str,
    with surrogateescape), each followed by a newline."""
    text = data.decode("utf-8", "surrogateescape")
    if text.endswith("\n"):
        text = text[:-1]
    return "".join(line.upper() + "\n" for line in text.split("\n")).encode(
        "utf-8", "surrogateescape"
    )


def test_changed_input_or_params_discard_the_checkpoint(project: Project) -> None:
    record_inputs(project)
    pipeline(project, sleep_every=100, backend="file")
    env = project.env()
    marker = project.root / "started"

    def interrupt() -> None:
        marker.unlink(missing_ok=True)
        proc = project.popen("run", env=env)
        assert wait_for(marker, proc)
        time.sleep(0.4)
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate()
        assert proc.returncode == 130, err
        assert list((project.root / "out").glob(".up.txt.pipekit-partial-*"))

    interrupt()
    project.write("in/b.txt", "changed\nb input\n", age=0)
    proc = project.cli("run", env=env)
    assert proc.returncode == 0, proc.stderr
    assert (
        "discarding its checkpoint: it was saved for other inputs, params or processor version"
        in proc.stderr
    )
    a = (project.root / "in/a.txt").read_bytes()
    assert (project.root / "out/up.txt").read_bytes() == _upper_lines(a + b"changed\nb input\n")
    assert [p.name for p in (project.root / "out").iterdir()] == ["up.txt"], "stale partial removed"

    interrupt_from = (project.root / "out/up.txt").read_bytes()
    os.unlink(project.root / "out/up.txt")
    interrupt()
    pipeline(project, sleep_every=101, backend="file")  # other params: another fingerprint
    proc = project.cli("run", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "discarding its checkpoint" in proc.stderr
    assert (project.root / "out/up.txt").read_bytes() == interrupt_from


def test_a_second_sigint_stops_at_once_and_the_last_checkpoint_stands(project: Project) -> None:
    record_inputs(project)
    pipeline(project, sleep_every=50, backend="file")
    marker = project.root / "started"
    proc = project.popen("run")
    assert wait_for(marker, proc)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    summary = project.run_json()
    assert summary["stages"][0]["records"]["resumed_from"], "a periodic checkpoint stood"
    expected = (project.root / "in/a.txt").read_bytes() + (project.root / "in/b.txt").read_bytes()
    assert (project.root / "out/up.txt").read_bytes() == _upper_lines(expected)
