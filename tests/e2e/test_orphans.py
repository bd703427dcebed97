"""Issue 20 item 2: the worker process of a stage with a ``timeout`` (and
every process in its group) dies with the runner, even when the runner is
killed with SIGKILL, so that no orphan keeps appending to the partial output
or saving checkpoints while the next run works on the same stage."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import HELPERS, Project
from pipekit.engine._execute import run_in_worker
from pipekit.errors import LeaseLost
from pipekit.plan._pipeline import load_pipeline
from pipekit.plugins._manager import load_registry
from pipekit.plugins._processors import StageContext
from redisfix import RedisServer, real_connection

N = 20_000


def _alive(pid: int) -> bool:
    """``pid`` runs (a zombie waiting for its reaper counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(0.05)


def _partial(project: Project) -> Path | None:
    found = sorted((project.root / "out").glob(".up.txt.pipekit-partial-*"))
    return found[0] if found else None


def _partial_size(project: Project) -> int:
    partial = _partial(project)
    return partial.stat().st_size if partial is not None else 0


def test_sigkill_of_the_runner_kills_its_worker_and_a_rerun_is_exactly_once(
    project: Project,
) -> None:
    lines = [f"record {i:06d}" for i in range(N)]
    project.write("in/a.txt", "\n".join(lines) + "\n")
    marker = project.root.parent / "worker.pid"
    child_file = project.root.parent / "child.pid"
    gate = project.root.parent / "fast"  # absent: the stage takes about 100 s
    project.pipeline(
        [
            {
                "name": "up",
                "uses": "gated-upper",
                "inputs": ["in/a.txt"],
                "outputs": ["out/up.txt"],
                "timeout": 3600,  # runs in a worker process
                "params": {"marker": str(marker), "gate": str(gate), "child": str(child_file)},
                "checkpoint": {"every_records": 100},
                "allow_network": True,  # the guard refuses a plain child process
            }
        ]
    )
    env = project.env()
    env["PIPEKIT_PLUGIN_MODULES"] += ",pipekit_lifetest"
    log = open(project.root.parent / "runner.log", "wb")
    runner = subprocess.Popen(
        [sys.executable, "-m", "pipekit", "run"],
        cwd=project.root,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    worker = child = 0
    try:

        def worker_started() -> bool:
            assert runner.poll() is None, (project.root.parent / "runner.log").read_text()
            return marker.exists() and marker.read_text() != ""

        _wait_for(worker_started, 120, "the worker")
        worker = int(marker.read_text())
        child = int(child_file.read_text())
        assert worker != runner.pid, "the stage must run in a worker process"
        _wait_for(lambda: _partial_size(project) > 0, 60, "the partial output to grow")
        runner.send_signal(signal.SIGKILL)
        runner.wait()
        _wait_for(lambda: not _alive(worker), 30, "the orphaned worker to die")
        _wait_for(lambda: not _alive(child), 30, "the worker's child process to die")
        size = _partial_size(project)
        time.sleep(0.5)
        assert _partial_size(project) == size, "the partial output still grows"
    finally:
        for pid in (worker, child):
            if pid and _alive(pid):
                os.kill(pid, signal.SIGKILL)
    gate.write_text("")
    summary = project.run_json(env=env)
    assert summary["status"] == "ok"
    out = (project.root / "out/up.txt").read_text().splitlines()
    assert out == [line.upper() for line in lines]


def test_a_worker_is_killed_when_the_stage_lease_is_lost(
    project: Project, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lease lost while the worker works (another runner may hold the
    stage now): the worker is killed at once and the attempt fails with
    LeaseLost, instead of writing on."""
    from pipekit_redis.lock import RedisLockBackend

    monkeypatch.setenv("PIPEKIT_PLUGIN_MODULES", "pipekit_testplugin,pipekit_lifetest")
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join([str(HELPERS), os.environ.get("PYTHONPATH", "")])
    )
    marker = project.root.parent / "worker.pid"
    project.write("in.txt", "x\n")
    project.pipeline(
        [
            {
                "name": "hold",
                "uses": "pid-sleep",
                "inputs": ["in.txt"],
                "outputs": ["out.txt"],
                "timeout": 600,
                "params": {"marker": str(marker)},
            }
        ]
    )
    stage = load_pipeline(project.file, load_registry()).stages["hold"]
    conn = real_connection(redis_server)
    lease = RedisLockBackend(conn).lock("stage/p/hold", 0.6)
    assert lease.acquire(timeout=0)
    context = StageContext(
        stage_name="hold",
        run_id="r",
        inputs=list(stage.input_paths),
        outputs=[project.root / ".out.tmp"],
        params=stage.params,
        log=logging.getLogger("test"),
        workdir=project.root,
    )

    def take_the_lock_away() -> None:
        _wait_for(lambda: marker.exists() and marker.read_text() != "", 120, "the worker")
        redis_server.client().delete(conn.key("lock", "stage/p/hold"))

    thief = threading.Thread(target=take_the_lock_away)
    thief.start()
    started = time.monotonic()
    try:
        with pytest.raises(LeaseLost):
            run_in_worker(
                stage,
                context,
                pipeline_file=project.file,
                backend="file",
                timeout=600,
                lease=lease,
            )
    finally:
        thief.join()
        lease.release()
    assert time.monotonic() - started < 300  # not the stage's 600 s
    assert not _alive(int(marker.read_text()))


def _processes_with(token: str) -> list[int]:
    """Pids of the processes whose command line holds ``token``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if token.encode() in cmdline and _alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def test_sigkill_of_the_runner_kills_its_shell_commands_and_what_they_started(
    project: Project, tmp_path: Path
) -> None:
    """A shell command runs in a session of its own (so that a timeout can
    kill all it started); it must still die with a runner killed with
    SIGKILL, with its children, instead of finishing its work later."""
    token = f"{os.getpid() % 1000 + 100}.{time.monotonic_ns() % 1000:03d}"
    marker = tmp_path / "late"
    project.write("in.txt", "x\n")
    project.pipeline(
        [
            {
                "name": "long",
                "uses": "shell",
                "inputs": ["in.txt"],
                "outputs": ["out.txt"],
                "params": {
                    "cmd": f"(sleep {token}; touch {marker}) & sleep {token}; cp {{input}} {{output}}"
                },
            }
        ]
    )
    runner = project.popen("run", "--json")
    try:
        _wait_for(lambda: len(_processes_with(f"sleep {token}")) >= 2, 60, "the commands to start")
    finally:
        runner.kill()
    try:
        _wait_for(lambda: not _processes_with(f"sleep {token}"), 30, "the commands to die")
    finally:
        for pid in _processes_with(f"sleep {token}"):
            os.kill(pid, signal.SIGKILL)
        runner.communicate(timeout=30)  # the commands held its stderr
    assert not marker.exists()
    assert not (project.root / "out.txt").exists()


def test_a_stopped_runner_s_worker_checkpoints_the_slow_record_in_hand(project: Project) -> None:
    """A record stage in a worker process (it has a timeout) with slow
    records: SIGTERM to the runner reaches the worker, which checkpoints
    after the record in hand, well within the grace period before SIGKILL,
    and the rerun resumes there (it waited for a batch of 64 records, 32 s
    at 0.5 s each, and was killed at 5 s with its work lost)."""
    project.write("in/a.txt", "".join(f"record {i:06d}\n" for i in range(200)))
    marker = project.root.parent / "worker.pid"
    gate = project.root.parent / "fast"
    project.pipeline(
        [
            {
                "name": "up",
                "uses": "gated-upper",
                "inputs": ["in/a.txt"],
                "outputs": ["out/up.txt"],
                "timeout": 3600,  # runs in a worker process
                "params": {"marker": str(marker), "gate": str(gate), "slow_s": 0.5},
            }
        ]
    )
    env = project.env()
    env["PIPEKIT_PLUGIN_MODULES"] += ",pipekit_lifetest"
    runner = subprocess.Popen(
        [sys.executable, "-m", "pipekit", "run"],
        cwd=project.root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        _wait_for(lambda: marker.exists() and marker.read_text() != "", 120, "the first record")
        runner.send_signal(signal.SIGTERM)
        _, err = runner.communicate(timeout=120)
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()
    assert runner.returncode == 130, err.decode()
    gate.touch()
    summary = project.run_json(env=env)
    (stage,) = summary["stages"]
    assert stage["status"] == "ok", stage
    assert (stage["records"].get("resumed_from") or 0) >= 1, stage
    assert project.read("out/up.txt") == "".join(f"RECORD {i:06d}\n" for i in range(200))
