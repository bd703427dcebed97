"""Several `pipekit run` processes on one pipeline: every stage's side effect
happens exactly once, and every runner exits 0."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from conftest import Project


def shared_pipeline(project: Project, n_independent: int = 8) -> str:
    log = str(project.root / "executions.log")
    project.write("in.txt", "data\n")
    stages = []
    for i in range(n_independent):
        stages.append(
            {
                "name": f"s{i}",
                "uses": "side-effect",
                "inputs": ["in.txt"],
                "outputs": [f"out/s{i}.txt"],
                "params": {"log": log, "seconds": 0.05},
            }
        )
    stages.append(
        {
            "name": "merge",
            "uses": "side-effect",
            "inputs": [f"out/s{i}.txt" for i in range(n_independent)],
            "outputs": ["out/merged.txt"],
            "params": {"log": log, "seconds": 0.05},
        }
    )
    stages.append(
        {
            "name": "final",
            "uses": "side-effect",
            "inputs": ["out/merged.txt"],
            "outputs": ["out/final.txt"],
            "params": {"log": log},
        }
    )
    project.pipeline(stages)
    return log


@pytest.mark.parametrize("runners", [2, 4])
def test_concurrent_runners_execute_each_stage_once(project: Project, runners: int) -> None:
    log = shared_pipeline(project)
    procs = [project.popen("run", "--json", "--jobs", "2") for _ in range(runners)]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
        assert json.loads(out)["status"] == "ok"
    counts = Counter(line.split()[0] for line in open(log))
    assert counts == Counter({**{f"s{i}": 1 for i in range(8)}, "merge": 1, "final": 1}), counts
    assert (project.root / "out/final.txt").read_text() == "data\n" * 8
    # every stage ran once in total across the runners; the others skipped it
    ran = Counter()
    for out, _ in outs:
        for st in json.loads(out)["stages"]:
            if st["status"] == "ok":
                ran[st["name"]] += 1
    assert all(v == 1 for v in ran.values()) and len(ran) == 10
