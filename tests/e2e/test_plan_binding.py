"""A plan from the plan cache is the same ``Pipeline`` a full load makes; a
stage that must run from it is bound to the processor of the plugin
registry (pluggy, with its checks and ``PIPEKIT_DISABLE_PLUGINS``), its
config and params built as a full load builds them. No secret is written
to the cache, and ``pipekit status`` writes nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import Project
from pipekit.errors import PluginError
from pipekit.plan import _plan_cache as plancache
from pipekit.plan._pipeline import Pipeline, PlannedStage, load_pipeline
from pipekit.plugins._manager import load_registry

PROBE = (
    "import json, sys, pipekit.cli; rc = pipekit.cli.main(['run', '--json']); "
    "sys.stderr.write(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
    "('cattrs', 'cattr', 'pluggy', 'pipekit_stages'))) + '\\n'); sys.exit(rc)"
)


def _probe(project: Project) -> tuple[dict, list[str]]:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=project.root,
        env=project.env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout), json.loads(proc.stderr.strip().splitlines()[-1])


def test_a_rerun_of_stages_from_a_cached_plan_binds_them_through_the_plugin_manager(
    project: Project,
) -> None:
    project.write("a.txt", "a\n")
    project.write("b.txt", "b\n")
    project.pipeline(
        [
            {
                "name": "sh",
                "uses": "shell",
                "inputs": ["a.txt"],
                "outputs": ["a.out"],
                "params": {"cmd": "tr a-z A-Z < {input} > {output}", "env": {"X": "1"}},
                "retry": {"attempts": 2, "backoff": 0.5},
            },
            {
                "name": "rep",
                "uses": "replace",
                "inputs": ["b.txt"],
                "outputs": ["b.out"],
                "params": {"pattern": "b", "replacement": "B"},
            },
        ]
    )
    os.utime(project.file, (time.time() - 10, time.time() - 10))
    project.run_json()  # caches the plan
    project.write("a.txt", "aa\n")
    project.write("b.txt", "bb\n")
    summary, modules = _probe(project)
    assert project.statuses(summary) == {"sh": "ok", "rep": "ok"}
    assert project.read("a.out") == "AA\n"
    assert project.read("b.out") == "BB\n"
    assert "pluggy" in modules, modules  # the processors came from the registry


def test_a_no_op_rerun_from_a_cached_plan_loads_no_plugin(project: Project) -> None:
    project.write("a.txt", "a\n")
    project.pipeline(
        [
            {
                "name": "sh",
                "uses": "shell",
                "inputs": ["a.txt"],
                "outputs": ["a.out"],
                "params": {"cmd": "cp {input} {output}"},
            }
        ]
    )
    os.utime(project.file, (time.time() - 10, time.time() - 10))
    project.run_json()  # caches the plan
    os.utime(project.root / "a.out", (time.time() - 10, time.time() - 10))
    project.run_json()  # hashes the output by its stat
    summary, modules = _probe(project)
    assert project.statuses(summary) == {"sh": "skipped"}
    assert modules == [], modules


def _uses_cached_plan(project: Project) -> bool:
    proc = project.cli("run", "-vv")
    assert proc.returncode == 0, proc.stderr
    return "plan cache: using" in proc.stderr


@pytest.mark.parametrize("age", [0, 10], ids=["just-written", "older"])
def test_a_cached_plan_is_valid_for_the_content_it_was_made_from(
    project: Project, age: int
) -> None:
    """A plan is cached with the SHA-256 of the bytes it was made from: the
    next run uses it at once, and an edit that keeps the file's size, mtime
    and inode is still seen, whatever the file's age."""
    project.write("in.txt", "abc\n")

    def pipeline(cmd: str) -> None:
        project.pipeline(
            [
                {
                    "name": "s",
                    "uses": "shell",
                    "inputs": ["in.txt"],
                    "outputs": ["out.txt"],
                    "params": {"cmd": cmd},
                }
            ]
        )

    pipeline("tr a-z A-Z < {input} > {output}")
    os.utime(project.file, (time.time() - age, time.time() - age))
    assert not _uses_cached_plan(project)  # first run: caches it
    assert _uses_cached_plan(project)  # within a second of the edit
    st = project.file.stat()
    # Same length, same mtime, same inode: only the content tells.
    with open(project.file, "r+b") as f:
        text = f.read()
        f.seek(0)
        f.write(text.replace(b"tr a-z A-Z", b"tr a-z B-Z"))
    os.utime(project.file, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert project.file.stat().st_size == st.st_size and project.file.stat().st_ino == st.st_ino
    assert not _uses_cached_plan(project)
    assert project.read("out.txt") == "BCD\n"  # the edited command ran


def test_a_stage_run_from_a_cached_plan_gets_its_inputs_as_paths(project: Project) -> None:
    """``ctx.inputs`` is a list of ``Path`` (DESIGN §2), whether the plan was
    loaded from the file or from the cache (which keeps paths as str): the
    test plugin's ``sleep`` calls ``ctx.inputs[0].read_bytes()``."""
    project.write("in.txt", "x\n")
    project.pipeline(
        [
            {
                "name": "s",
                "uses": "sleep",
                "inputs": ["in.txt"],
                "outputs": ["o.txt"],
                "params": {"seconds": 0},
            }
        ]
    )
    assert project.statuses(project.run_json()) == {"s": "ok"}  # caches the plan
    assert _uses_cached_plan(project)
    summary = project.run_json("--force", "all")
    assert project.statuses(summary) == {"s": "ok"}
    assert project.read("o.txt") == "x\n"


def test_a_rerun_right_after_the_first_decides_every_stage_without_its_processor(
    project: Project,
) -> None:
    """Files written within the hash cache's racy window (2 s) are not
    cached by their stat; a rerun then reads the small ones inline (a
    cheap decision), instead of locking each stage and binding its
    processor to decide it."""
    for i in range(3):
        project.write(f"in{i}.txt", f"{i}\n", age=0)  # just written
    project.pipeline(
        [
            {
                "name": f"s{i}",
                "uses": "shell",
                "inputs": [f"in{i}.txt"],
                "outputs": [f"out{i}.txt"],
                "params": {"cmd": "cp {input} {output}"},
            }
            for i in range(3)
        ]
    )
    project.run_json()
    # mtimes ahead of the clock: in the hash cache's racy window however
    # long the machine takes to start the rerun (a busy CI one)
    ahead = time.time() + 3600
    for i in range(3):
        os.utime(project.root / f"in{i}.txt", (ahead, ahead))
    probe = (
        "import json, sys, pipekit.cli; rc = pipekit.cli.main(['run', '--json']); "
        "sys.stderr.write(json.dumps('pipekit_stages.shell' in sys.modules) + '\\n'); sys.exit(rc)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=project.root,
        env=project.env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert set(project.statuses(json.loads(proc.stdout)).values()) == {"skipped"}
    assert json.loads(proc.stderr.strip().splitlines()[-1]) is False, proc.stderr


@pytest.mark.parametrize(
    "content",
    [b"[]\n{}", b"[]", b'{"format": 7}', b"\x00\xff\n", b'{"format": 7, "file_sig": 3}\n[]', b""],
    ids=["list-head", "list-only", "no-newline", "binary", "list-body", "empty"],
)
def test_a_damaged_cached_plan_is_a_miss_not_a_crash(project: Project, content: bytes) -> None:
    """A cached plan that is not what pipekit writes (a torn copy, a file
    from elsewhere) is ignored and rewritten; a list where the head's table
    should be raised AttributeError out of the run before."""
    project.write("in.txt", "abc\n")
    project.pipeline(
        [
            {
                "name": "s",
                "uses": "shell",
                "inputs": ["in.txt"],
                "outputs": ["out.txt"],
                "params": {"cmd": "tr a-z A-Z < {input} > {output}"},
            }
        ]
    )
    assert not _uses_cached_plan(project)
    plans = list((project.root.parent / "cache" / "plans").glob("*.json"))
    assert len(plans) == 1
    plans[0].write_bytes(content)
    proc = project.cli("run", "-vv")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "plan cache: not used" in proc.stderr, proc.stderr
    assert _uses_cached_plan(project)  # written again by that run
    assert project.read("out.txt") == "ABC\n"


def _stored_and_loaded(project: Project) -> tuple[Pipeline, Pipeline]:
    registry = load_registry()
    fresh = load_pipeline(project.file, registry)
    plancache.store(fresh, registry, None)
    cached = plancache.load(project.file, None)
    assert cached is not None
    return fresh, cached


@pytest.fixture
def in_process(
    project: Project, monkeypatch: pytest.MonkeyPatch, _test_plugin_env: None
) -> Project:
    monkeypatch.setenv("PIPEKIT_CACHE_DIR", str(project.root.parent / "cache"))
    return project


def test_a_cached_plan_is_the_pipeline_a_full_load_makes(in_process: Project) -> None:
    project = in_process
    project.write("in.txt", "x\n")
    project.pipeline(
        [
            {
                "name": "s",
                "uses": "sleep",
                "inputs": ["in.txt"],
                "outputs": ["mid.txt"],
                "params": {"seconds": 0},
                "retry": {"attempts": 2},
                "timeout": 30,
            },
            {
                "name": "t",
                "uses": "shell",
                "inputs": ["mid.txt"],
                "outputs": ["out.txt"],
                "params": {"cmd": "cp {input} {output}"},
            },
        ],
        network={"allow": ["loopback"], "isolation": "off"},
    )
    fresh, cached = _stored_and_loaded(project)
    assert type(cached) is Pipeline
    for field in ("file", "root", "name", "state_dir", "backend", "network", "order"):
        assert getattr(cached, field) == getattr(fresh, field), field
    for name, st in fresh.stages.items():
        other = cached.stages[name]
        assert type(other) is PlannedStage
        assert other.binder is not None  # nothing bound until asked
        for field in (
            "name",
            "index",
            "uses",
            "version",
            "params_canonical",
            "inputs",
            "outputs",
            "input_files",
            "output_files",
            "input_paths",
            "output_paths",
            "deps",
            "config",
            "params",
        ):
            assert getattr(other, field) == getattr(st, field), (name, field)
        assert all(isinstance(p, Path) for p in other.input_paths + other.output_paths)
        # the very processor object of the plugin registry, not a copy
        assert other.processor is cached.registry.get().stages[st.uses].obj


def test_a_cached_plan_binds_its_processors_through_the_plugin_manager(
    in_process: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``PIPEKIT_DISABLE_PLUGINS`` holds for a cached plan's processors: they
    are not taken from a plugin module behind the plugin manager's back."""
    project = in_process
    project.write("in.txt", "x\n")
    project.pipeline(
        [
            {
                "name": "s",
                "uses": "sleep",
                "inputs": ["in.txt"],
                "outputs": ["o.txt"],
                "params": {"seconds": 0},
            }
        ]
    )
    _fresh, cached = _stored_and_loaded(project)
    monkeypatch.setenv("PIPEKIT_DISABLE_PLUGINS", "pipekit_testplugin")
    with pytest.raises(PluginError, match="unknown stage processor 'sleep'"):
        cached.stages["s"].processor


def test_a_cached_plan_loads_its_entry_points_without_a_scan(
    in_process: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The plan cache keeps the entry points the full load found (it is
    valid only for the same environment): binding a stage loads them by
    their values, through the plugin manager, without importlib.metadata's
    scan of every installed distribution; PIPEKIT_DISABLE_PLUGINS still holds."""
    project = in_process
    project.write("in.txt", "x\n")
    project.pipeline([{"name": "s", "uses": "upper", "inputs": ["in.txt"], "outputs": ["o.txt"]}])
    fresh, cached = _stored_and_loaded(project)
    stored = json.loads(next((project.root.parent / "cache" / "plans").glob("*.json")).read_bytes())
    assert ["stages", "pipekit-stages"] in [row[:2] for row in stored["entry_points"]]

    def no_scan(**_: object) -> None:
        raise AssertionError("the entry points were scanned")

    monkeypatch.setattr("importlib.metadata.entry_points", no_scan)
    assert type(cached.stages["s"].processor) is type(fresh.stages["s"].processor)
    plugins = cached.registry.get().plugins
    assert [p.label() for p in plugins] == [p.label() for p in fresh.registry.get().plugins]
    monkeypatch.setenv("PIPEKIT_DISABLE_PLUGINS", "pipekit-stages")
    assert plancache.load(project.file, None) is None  # another environment
    registry = load_registry(known_entry_points=stored["entry_points"])
    assert "stages" in registry.disabled
    with pytest.raises(PluginError, match="unknown stage processor 'upper'"):
        registry.get("stages", "upper")


def test_a_backend_password_is_never_written_to_the_plan_cache(in_process: Project) -> None:
    project = in_process
    project.write("in.txt", "x\n")
    url = "redis://:hunter2@127.0.0.1:6379/0"
    project.pipeline(
        [
            {
                "name": "s",
                "uses": "sleep",
                "inputs": ["in.txt"],
                "outputs": ["o.txt"],
                "params": {"seconds": 0},
            }
        ],
        backend={"name": "file", "options": {"url": url}},
    )
    _fresh, cached = _stored_and_loaded(project)
    plans = list((project.root.parent / "cache" / "plans").glob("*.json"))
    assert len(plans) == 1
    assert b"hunter2" not in plans[0].read_bytes()
    assert plans[0].stat().st_mode & 0o777 == 0o600
    assert plans[0].parent.stat().st_mode & 0o777 == 0o700
    assert cached.backend.options == {"url": url}  # read again from the pipeline file


@pytest.mark.parametrize(
    "options",
    [{"password": "hunter2"}, {"auth_token": "hunter2"}, {"urls": ["redis://u:hunter2@h/0"]}],
    ids=["password", "token", "url-in-list"],
)
def test_no_backend_secret_is_written_to_the_plan_cache(
    in_process: Project, options: dict[str, object]
) -> None:
    project = in_process
    project.write("in.txt", "x\n")
    project.pipeline(
        [
            {
                "name": "s",
                "uses": "sleep",
                "inputs": ["in.txt"],
                "outputs": ["o.txt"],
                "params": {"seconds": 0},
            }
        ],
        backend={"name": "file", "options": options},
    )
    _fresh, cached = _stored_and_loaded(project)
    (plan,) = (project.root.parent / "cache" / "plans").glob("*.json")
    assert b"hunter2" not in plan.read_bytes()
    assert cached.backend.options == options


def test_status_writes_nothing(project: Project) -> None:
    """``pipekit status`` on a fresh project: no state folder, no plan cache."""
    project.write("in.txt", "x\n")
    project.pipeline(
        [
            {
                "name": "s",
                "uses": "shell",
                "inputs": ["in.txt"],
                "outputs": ["o.txt"],
                "params": {"cmd": "cp {input} {output}"},
            }
        ]
    )
    before = sorted(p.name for p in project.root.iterdir())
    proc = project.cli("status", "--json")
    assert proc.returncode == 0, proc.stderr
    assert [s["status"] for s in json.loads(proc.stdout)["stages"]] == ["will-run"]
    assert sorted(p.name for p in project.root.iterdir()) == before
    assert not (project.root.parent / "cache").exists()
