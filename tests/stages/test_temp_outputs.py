"""Temporary outputs nobody else can redirect (issue 20 item 8) and the
sweep of what killed runs leave (issue 20 items 15 and 12). Real runs,
real processes, real SIGKILLs."""

from __future__ import annotations

import json
import logging
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import Project
from pipekit import atomic
from pipekit.atomic import TEMP_MARK, temp_path_for, unlink_quietly

OUTPUTS = ["copy.out", "concat.out", "simple.out", "piped.out"]

# Runs pipekit in this very process after planting a symlink to the victim
# at every temp name it could predict for its outputs: the names of the old
# scheme, `.<out>.pipekit-tmp-<host>-<pid>-<n>`, for its own pid.
PLANTER = textwrap.dedent(
    """
    import os, re, sys
    victim, *outputs = sys.argv[1:]
    host = re.sub(r"[^A-Za-z0-9_.]", "_", os.uname().nodename)
    for out in outputs:
        for n in range(300):
            for tag in ("", "out-"):
                os.symlink(victim, f".{out}.pipekit-tmp-{tag}{host}-{os.getpid()}-{n}")
    sys.argv = ["pipekit", "run", "--json"]
    from pipekit.cli import entry
    entry()
    """
)


def test_planted_symlinks_at_predictable_temp_names_redirect_nothing(
    project: Project, tmp_path: Path
) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    project.write("in.txt", "abc\n")
    project.pipeline(
        [
            {"name": "copy", "uses": "copy", "inputs": ["in.txt"], "outputs": ["copy.out"]},
            {"name": "concat", "uses": "concat", "inputs": ["in.txt"], "outputs": ["concat.out"]},
            {
                "name": "simple",
                "uses": "shell",
                "inputs": ["in.txt"],
                "outputs": ["simple.out"],
                "params": {"cmd": "tr a-z A-Z < {input} > {output}"},
            },
            {
                "name": "piped",
                "uses": "shell",
                "inputs": ["in.txt"],
                "outputs": ["piped.out"],
                "params": {"cmd": "cat {input} | tr a-z A-Z > {output}"},
                "timeout": 60,
            },
        ]
    )
    proc = subprocess.run(
        [sys.executable, "-c", PLANTER, str(victim), *OUTPUTS],
        cwd=project.root,
        env=project.env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert victim.read_text() == "precious\n"
    assert proc.returncode == 0, proc.stderr
    assert set(project.statuses(json.loads(proc.stdout)).values()) == {"ok"}
    for name, text in zip(OUTPUTS, ["abc\n", "abc\n", "ABC\n", "ABC\n"]):
        out = project.root / name
        assert not out.is_symlink() and out.read_text() == text, name
    leftovers = [
        p.name for p in project.root.iterdir() if TEMP_MARK in p.name and not p.is_symlink()
    ]
    assert leftovers == []


def test_copy_never_writes_through_a_symlink_at_its_output(tmp_path: Path) -> None:
    import pipekit
    from pipekit_stages.files import Concat, Copy

    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    src = tmp_path / "in.txt"
    src.write_text("abc\n")
    dst = tmp_path / "out.txt"
    dst.symlink_to(victim)
    for processor in (Copy(), Concat()):
        ctx = pipekit.StageContext(
            stage_name="s",
            run_id="r",
            inputs=[src],
            outputs=[dst],
            params=None,
            log=logging.getLogger("test"),
        )
        with pytest.raises(OSError):
            processor.run(ctx)
    assert victim.read_text() == "precious\n"


def test_a_temp_path_is_in_a_private_folder_of_its_own(tmp_path: Path) -> None:
    final = tmp_path / "out.txt"
    first, second = temp_path_for(final), temp_path_for(final)
    assert first.parent != second.parent and first.parent.parent == tmp_path
    assert first.name == "out.txt" and not first.exists()
    assert stat.S_IMODE(first.parent.stat().st_mode) == 0o700
    first.write_text("new\n")
    atomic.move_into_place(first, final)
    assert final.read_text() == "new\n" and not first.parent.exists()
    second.write_text("discarded\n")
    unlink_quietly(second)
    assert not second.parent.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]
