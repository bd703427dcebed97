"""A folder output under ``kill -9`` (issue 22): under its final name the
complete old tree or the complete new one; what a killed run leaves is
swept or put back by the next run. Real runs, real SIGKILLs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import Project
from pipekit._atomic import _HOST, TEMP_MARK
from test_folders import temp_leftovers, tree

OLD = {f"f{i:03}.txt": f"old {i}\n" for i in range(50)}
NEW = {f"f{i:03}.txt": f"new {i}\n" for i in range(60)}

# copies the input folder into the output folder, says so, then waits
# until the test allows it to end
BLOCKING = "cp -r {input}/. {output}/ && touch copied && while [ ! -e go ]; do sleep 0.02; done"


def write_tree(project: Project, files: dict[str, str]) -> None:
    for name in os.listdir(project.root / "src") if (project.root / "src").exists() else []:
        (project.root / "src" / name).unlink()
    for name, text in files.items():
        project.write(f"src/{name}", text)


def blocking_pipeline(project: Project) -> None:
    project.pipeline(
        [
            {
                "name": "tree",
                "uses": "shell",
                "inputs": ["src/"],
                "outputs": ["out/"],
                "params": {"cmd": BLOCKING},
            }
        ]
    )


def wait_for(path: Path, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the stage never got there"
        time.sleep(0.01)


def test_a_run_killed_while_its_stage_fills_the_folder_leaves_the_old_tree(
    project: Project,
) -> None:
    write_tree(project, OLD)
    blocking_pipeline(project)
    (project.root / "go").touch()
    project.run_json()
    assert tree(project.root / "out") == OLD
    (project.root / "go").unlink()
    (project.root / "copied").unlink()
    write_tree(project, NEW)
    proc = project.popen("run", start_new_session=True)
    wait_for(project.root / "copied", proc)
    os.killpg(proc.pid, signal.SIGKILL)  # the runner and its shell
    proc.communicate()
    assert tree(project.root / "out") == OLD
    assert temp_leftovers(project.root), "the killed run's temp tree is left"
    (project.root / "go").touch()
    assert project.run_json()["status"] == "ok"
    assert tree(project.root / "out") == NEW
    assert temp_leftovers(project.root) == []


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_run_killed_between_the_renames_gets_its_old_tree_put_back(
    project: Project,
) -> None:
    """The state a kill between the two renames leaves (the old tree aside,
    the new one still in its temp folder, nothing under the final name),
    made by hand for a process that is gone: the next run puts the old tree
    back, and it is up to date."""
    write_tree(project, OLD)
    project.pipeline([{"name": "tree", "uses": "copy", "inputs": ["src/"], "outputs": ["out/"]}])
    project.run_json()
    pid = dead_pid()
    aside = project.root / f"{TEMP_MARK}aside-{_HOST}-{pid}-abc123"
    aside.mkdir(mode=0o700)
    (project.root / "out").rename(aside / "out")
    new = project.root / f"{TEMP_MARK}run-{_HOST}-{pid}-def456" / "out"
    new.mkdir(parents=True)
    (new / "half.txt").write_text("new\n")
    note = project.root / ".pipekit/inflight" / f"{_HOST}-{pid}.txt"
    note.parent.mkdir(parents=True, exist_ok=True)
    note.write_text(f"{project.root}\n")
    summary = project.run_json()
    assert project.statuses(summary) == {"tree": "skipped"}, summary
    assert tree(project.root / "out") == OLD
    assert temp_leftovers(project.root) == []


def test_kills_at_many_points_of_a_commit_leave_a_complete_tree(project: Project) -> None:
    """SIGKILL at growing delays after the stage's work ends (so within
    its commit or after): under ``out`` the old tree or the new one,
    never a mix; or, killed between the renames, the old tree aside,
    which the next run puts back."""
    many_old = {f"f{i:04}.txt": f"old {i}\n" for i in range(400)}
    many_new = {f"f{i:04}.txt": f"new {i}\n" for i in range(400)}
    project.pipeline(
        [
            {
                "name": "tree",
                "uses": "shell",
                "inputs": ["src/"],
                "outputs": ["out/"],
                "params": {"cmd": "cp -r {input}/. {output}/ && touch copied"},
            }
        ]
    )
    seen = set()
    for attempt in range(8):
        old, new = (many_old, many_new) if attempt % 2 == 0 else (many_new, many_old)
        write_tree(project, old)
        project.run_json()
        assert tree(project.root / "out") == old
        write_tree(project, new)
        (project.root / "copied").unlink(missing_ok=True)
        proc = project.popen("run", start_new_session=True)
        wait_for(project.root / "copied", proc)
        time.sleep(attempt * 0.01)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        out = project.root / "out"
        if out.exists():
            found = tree(out)
            assert found in (old, new), "a mix of the old and the new tree"
            seen.add("old" if found == old else "new")
        else:
            asides = [p for p in project.root.iterdir() if p.name.startswith(f"{TEMP_MARK}aside-")]
            assert len(asides) == 1 and tree(asides[0] / "out") == old
            seen.add("aside")
        assert project.run_json()["status"] == "ok"
        assert tree(out) == new
        assert temp_leftovers(project.root) == []
        (project.root / "copied").unlink(missing_ok=True)
    assert "old" in seen or "aside" in seen or "new" in seen
