"""Many runners, one pipeline, one Redis: real ``pipekit run`` processes,
each in a working folder of its own (its own state, as on another machine)
over one shared data folder, against a real ``redis-server``.

- several runners: every stage runs exactly once, every runner exits 0;
- a holder paused (SIGSTOP) past its lease: another takes the stage over,
  and the paused one, resumed, cannot commit;
- ``redis-server`` killed and restarted during a run: the run retries or
  fails cleanly, nothing is committed twice, and a rerun completes.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from conftest import Project
from redisfix import RedisServer

PLUGINS = "pipekit_testplugin,pipekit_redistest"


def working_folders(tmp_path: Path, n: int) -> list[Project]:
    out = []
    for i in range(n):
        root = tmp_path / f"runner{i}"
        root.mkdir()
        out.append(Project(root))
    return out


def write_everywhere(projects: list[Project], stages: list[dict[str, Any]], backend: dict) -> None:
    for p in projects:
        p.pipeline(stages, name="shared", backend=backend)


def env(p: Project) -> dict[str, str]:
    return p.env(PIPEKIT_PLUGIN_MODULES=PLUGINS)


def log_counts(log: Path) -> Counter[str]:
    return Counter(line.split()[0] for line in log.read_text().splitlines() if line.strip())


def records(server: RedisServer, prefix: str) -> dict[str, dict[str, Any]]:
    c = server.client()
    try:
        out = {}
        for key in c.scan_iter(match=f"{prefix}idem:*"):
            out[key.decode()[len(prefix) + 5 :]] = json.loads(c.hget(key, "record"))
        return out
    finally:
        c.close()


def test_many_runners_run_each_stage_once(tmp_path: Path, redis_server: RedisServer) -> None:
    shared = tmp_path / "shared"
    (shared / "in").mkdir(parents=True)
    log = shared / "executions.log"
    n = 24
    stages: list[dict[str, Any]] = []
    for i in range(n):
        (shared / "in" / f"{i}.txt").write_text(f"line {i}\n")
        stages.append(
            {
                "name": f"s{i}",
                "uses": "side-effect",
                "inputs": [f"../shared/in/{i}.txt"],
                "outputs": [f"../shared/out/s{i}.txt"],
                "params": {"log": str(log), "seconds": 0.05},
            }
        )
    for g in range(4):
        stages.append(
            {
                "name": f"m{g}",
                "uses": "side-effect",
                "inputs": [f"../shared/out/s{i}.txt" for i in range(g, n, 4)],
                "outputs": [f"../shared/out/m{g}.txt"],
                "params": {"log": str(log)},
            }
        )
    stages.append(
        {
            "name": "final",
            "uses": "side-effect",
            "inputs": [f"../shared/out/m{g}.txt" for g in range(4)],
            "outputs": ["../shared/out/final.txt"],
            "params": {"log": str(log)},
        }
    )
    projects = working_folders(tmp_path, 4)
    backend = {"name": "redis", "options": {"url": redis_server.url, "prefix": "many:"}}
    write_everywhere(projects, stages, backend)
    procs = [p.popen("run", "--json", "--jobs", "2", env=env(p)) for p in projects]
    outs = [proc.communicate(timeout=120) for proc in procs]
    for proc, (out, err) in zip(procs, outs):
        assert proc.returncode == 0, err
        assert "Traceback" not in err, err
        assert json.loads(out)["status"] == "ok"
    names = [s["name"] for s in stages]
    assert log_counts(log) == Counter(names), log_counts(log)
    ran: Counter[str] = Counter()
    for out, _ in outs:
        for st in json.loads(out)["stages"]:
            assert st["status"] in ("ok", "skipped"), st
            if st["status"] == "ok":
                ran[st["name"]] += 1
    assert ran == Counter(names), ran  # each stage ran in exactly one runner
    expected = "".join("".join(f"line {i}\n" for i in range(g, n, 4)) for g in range(4))
    assert (shared / "out" / "final.txt").read_text() == expected
    assert len(records(redis_server, "many:")) == len(names)
    # A fifth runner, on another machine as it were, finds everything done.
    (tmp_path / "runner4").mkdir()
    late = Project(tmp_path / "runner4")
    write_everywhere([late], stages, backend)
    summary = late.run_json(env=env(late))
    assert {s["status"] for s in summary["stages"]} == {"skipped"}
    assert all("done by run" in s["reason"] for s in summary["stages"]), summary


def test_paused_holder_cannot_commit(tmp_path: Path, redis_server: RedisServer) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    log = shared / "executions.log"
    stages = [
        {
            "name": "slow",
            "uses": "stamp",
            "outputs": ["../shared/out.txt"],
            "params": {"log": str(log), "seconds": 2.0},
        }
    ]
    a, b = working_folders(tmp_path, 2)
    ttl = 1.0
    backend = {
        "name": "redis",
        "options": {"url": redis_server.url, "prefix": "pause:", "lock_ttl": ttl},
    }
    write_everywhere([a, b], stages, backend)
    pa = a.popen("run", "--json", env=env(a))
    try:
        deadline = time.monotonic() + 30
        while not (log.exists() and log.read_text().strip()):
            assert time.monotonic() < deadline, pa.stderr.read() if pa.poll() is not None else ""
            time.sleep(0.02)
        os.kill(pa.pid, signal.SIGSTOP)
        time.sleep(ttl * 1.6)  # A's lease runs out while it is stopped
        pb = b.popen("run", "--json", env=env(b))
        out_b, err_b = pb.communicate(timeout=60)
        assert pb.returncode == 0, err_b
        summary_b = json.loads(out_b)
        assert summary_b["stages"][0]["status"] == "ok", summary_b
        b_result = (shared / "out.txt").read_text()
        assert b_result.startswith(summary_b["run_id"])
    finally:
        os.kill(pa.pid, signal.SIGCONT)
    out_a, err_a = pa.communicate(timeout=60)
    assert pa.returncode == 1, (out_a, err_a)
    assert "Traceback" not in err_a, err_a
    summary_a = json.loads(out_a)
    reason = summary_a["stages"][0]["reason"]
    assert "lost the stage's lock" in reason, reason
    # B's work stands: its output, its record; A left no temp file behind.
    assert (shared / "out.txt").read_text() == b_result
    recs = records(redis_server, "pause:")
    assert [r["result"]["run_id"] for r in recs.values()] == [summary_b["run_id"]]
    assert sorted(p.name for p in shared.iterdir()) == ["executions.log", "out.txt"]
    assert log_counts(log) == Counter({"slow": 2})
    # And A, run again, finds the stage done by B.
    again = a.run_json(env=env(a))
    assert again["stages"][0]["status"] == "skipped"
    assert summary_b["run_id"] in again["stages"][0]["reason"]


@pytest.mark.parametrize("down_for", [0.4, 3.0], ids=["back-within-retries", "down-longer"])
def test_redis_restart_during_a_run(
    tmp_path: Path, own_redis_server: RedisServer, down_for: float
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    log = shared / "executions.log"
    (shared / "in.txt").write_text("x\n")
    n = 8
    stages = []
    for i in range(n):
        src = "../shared/in.txt" if i == 0 else f"../shared/s{i - 1}.txt"
        stages.append(
            {
                "name": f"s{i}",
                "uses": "side-effect",
                "inputs": [src],
                "outputs": [f"../shared/s{i}.txt"],
                "params": {"log": str(log), "seconds": 0.25},
            }
        )
    (p,) = working_folders(tmp_path, 1)
    options = {"url": own_redis_server.url, "prefix": "rs:", "retries": 4}
    write_everywhere([p], stages, {"name": "redis", "options": options})
    proc = p.popen("run", "--json", env=env(p))
    deadline = time.monotonic() + 30
    while not (log.exists() and log_counts(log)["s2"] >= 1):  # kill while s2 works
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.01)
    own_redis_server.kill()
    time.sleep(down_for)
    own_redis_server.start()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode in (0, 1), (proc.returncode, err)
    assert "Traceback" not in err, err
    first = json.loads(out)
    if proc.returncode == 1:
        failed = [s for s in first["stages"] if s["status"] == "failed"]
        assert len(failed) == 1, first
        assert "unreachable" in failed[0]["reason"], failed
        assert "rs:" not in err  # said in words, not as keys
    second = p.run_json(env=env(p))
    ok_runs = Counter(
        s["name"] for summary in (first, second) for s in summary["stages"] if s["status"] == "ok"
    )
    assert all(v == 1 for v in ok_runs.values()), ok_runs  # nothing committed twice
    assert {s["status"] for s in second["stages"]} <= {"ok", "skipped"}
    recs = records(own_redis_server, "rs:")
    assert sorted(r["result"]["stage"] for r in recs.values()) == sorted(f"s{i}" for i in range(n))
    assert (shared / f"s{n - 1}.txt").read_text() == "x\n"
    if down_for > 2:
        assert proc.returncode == 1  # longer than the retries: failed cleanly


@pytest.mark.parametrize("down_for", [3.0, 10.0], ids=["down-3s", "down-10s"])
def test_a_run_survives_a_redis_restart_with_the_default_options(
    tmp_path: Path, own_redis_server: RedisServer, down_for: float
) -> None:
    """Issue 20 item 7: a primary restart of up to 10 s (AOF persistence,
    SIGKILL, the same port) is waited out with the default options: the run
    exits 0 and each stage ran and was committed exactly once."""
    shared = tmp_path / "shared"
    shared.mkdir()
    log = shared / "executions.log"
    (shared / "in.txt").write_text("x\n")
    n = 4
    stages = []
    for i in range(n):
        src = "../shared/in.txt" if i == 0 else f"../shared/s{i - 1}.txt"
        stages.append(
            {
                "name": f"s{i}",
                "uses": "side-effect",
                "inputs": [src],
                "outputs": [f"../shared/s{i}.txt"],
                "params": {"log": str(log), "seconds": 1.0},
            }
        )
    (p,) = working_folders(tmp_path, 1)
    write_everywhere([p], stages, {"name": "redis", "options": {"url": own_redis_server.url}})
    proc = p.popen("run", "--json", env=env(p))
    deadline = time.monotonic() + 60
    while not (log.exists() and log_counts(log)["s1"] >= 1):  # kill while s1 works
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.01)
    own_redis_server.kill()
    time.sleep(down_for)
    own_redis_server.start()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, (out, err)
    assert "Traceback" not in err, err
    summary = json.loads(out)
    assert {s["name"]: s["status"] for s in summary["stages"]} == {f"s{i}": "ok" for i in range(n)}
    assert log_counts(log) == Counter({f"s{i}": 1 for i in range(n)})  # each ran once
    recs = records(own_redis_server, "pipekit:")
    assert sorted(r["result"]["stage"] for r in recs.values()) == [f"s{i}" for i in range(n)]
    run = json.loads(next((p.root / ".pipekit" / "runs").glob("*.json")).read_text())
    assert [s.get("attempts") for s in run["stages"]] == [1] * n, run["stages"]
    again = p.run_json(env=env(p))
    assert {s["status"] for s in again["stages"]} == {"skipped"}
