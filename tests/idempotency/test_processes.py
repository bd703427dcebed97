"""Real processes on one key: 8 at once run the body once; a caller killed
with SIGKILL while PENDING is taken over after the pending timeout, and its
late completion cannot overwrite the newer result."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pipekit
import pytest
from pipekit import IdempotencyClaimLost, IdempotencyManager
from pipekit.idempotency import IdempotencyStatus

CALLER = textwrap.dedent(
    """
    import json, os, sys, time
    import pipekit

    store, log, start, pending_timeout, sleep = sys.argv[1:6]

    @pipekit.idempotent(store=store, operation="tests.work", pending_timeout=float(pending_timeout))
    def work(order: str, amount: int) -> dict[str, object]:
        with open(log, "a") as f:
            f.write(f"{os.getpid()}\\n")
        time.sleep(float(sleep))
        return {"order": order, "amount": amount, "by": os.getpid()}

    while time.time() < float(start):
        time.sleep(0.001)
    print(json.dumps(work("o-1", 250)))
    """
)


@pytest.fixture
def caller(tmp_path: Path) -> Path:
    script = tmp_path / "caller.py"
    script.write_text(CALLER)
    return script


def spawn(
    caller: Path, store: Path, log: Path, start: float, pending_timeout: float, sleep: float
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            str(caller),
            str(store),
            str(log),
            str(start),
            str(pending_timeout),
            str(sleep),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_eight_processes_one_key_the_body_runs_once(tmp_path: Path, caller: Path) -> None:
    store, log = tmp_path / "idem", tmp_path / "runs.log"
    start = time.time() + 2.0  # every process is up and waiting by then
    procs = [spawn(caller, store, log, start, 60, 0.5) for _ in range(8)]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        outs.append(json.loads(out))
    runs = log.read_text().split()
    assert len(runs) == 1, runs
    assert outs == [{"order": "o-1", "amount": 250, "by": int(runs[0])}] * 8


def test_a_killed_pending_caller_is_taken_over(tmp_path: Path, caller: Path) -> None:
    store, log = tmp_path / "idem", tmp_path / "runs.log"
    pending_timeout = 1.0
    victim = spawn(caller, store, log, 0, pending_timeout, 60)
    deadline = time.monotonic() + 30
    while not (log.exists() and log.read_text().strip()):
        assert time.monotonic() < deadline and victim.poll() is None, victim.stderr
        time.sleep(0.01)
    m = IdempotencyManager(store, pending_timeout=pending_timeout)
    [claim] = list(m.list("tests.work:"))
    assert claim.state == "PENDING" and f"pid {victim.pid} " in claim.owner
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(timeout=30)
    assert victim.returncode == -signal.SIGKILL

    @pipekit.idempotent(store=store, operation="tests.work", pending_timeout=pending_timeout)
    def work(order: str, amount: int) -> dict[str, object]:
        with open(log, "a") as f:
            f.write("next\n")
        return {"order": order, "amount": amount, "by": "next caller"}

    # the claimant was a process of this machine and is gone: the next
    # caller takes its claim over at once (see test_claims.py), and runs
    t0 = time.monotonic()
    assert work("o-1", 250) == {"order": "o-1", "amount": 250, "by": "next caller"}
    assert time.monotonic() - t0 < 30
    assert log.read_text().split() == [str(victim.pid), "next"]

    # the killed caller "comes back" with its claim: it cannot overwrite
    stale = IdempotencyStatus(
        key=claim.key,
        state="PENDING",
        fingerprint=claim.fingerprint,
        created=claim.created,
        owner=claim.owner,
    )
    with pytest.raises(IdempotencyClaimLost):
        m.complete(stale, {"order": "o-1", "amount": 250, "by": "killed"})
    with pytest.raises(IdempotencyClaimLost):
        m.fail(stale, RuntimeError("late"))
    assert m.get(claim.key).result["by"] == "next caller"
    assert work("o-1", 250)["by"] == "next caller"
    assert log.read_text().split() == [str(victim.pid), "next"]
