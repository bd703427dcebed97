"""The plugin contract (DESIGN §2): entry points, names registered twice,
hook validation, disabling plugins, ``pipekit plugins``, a third-party plugin
running for real, and observer hooks that raise.

Plugin distributions are built for real in ``tmp_path``: a module plus a
``*.dist-info`` folder (METADATA and entry_points.txt), put on PYTHONPATH
for a ``python -m pipekit`` subprocess, so importlib.metadata finds them
exactly as it finds an installed wheel.
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import Any

import pipekit
import pytest
from conftest import Project

PREFIX = "pipekit: error: "
BUILTIN_STAGES = {"copy", "concat", "upper", "lower", "filter", "replace", "shell"}
BACKEND_HOOKS = [
    "register_checkpoint_stores",
    "register_dead_letter_stores",
    "register_idempotency_stores",
    "register_lock_backends",
]


# -- helpers -------------------------------------------------------------------


class Site:
    """A folder on PYTHONPATH holding plugin modules and distributions."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def module(self, name: str, source: str) -> None:
        (self.root / f"{name}.py").write_text(textwrap.dedent(source))

    def dist(
        self,
        dist: str,
        version: str,
        entry_points: dict[str, str],
        modules: dict[str, str] | None = None,
    ) -> None:
        """A distribution named ``dist`` whose ``pipekit`` entry points map
        names to module paths; ``modules`` are written beside it."""
        for name, source in (modules or {}).items():
            self.module(name, source)
        info = self.root / f"{dist.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        eps = "".join(f"{k} = {v}\n" for k, v in entry_points.items())
        (info / "entry_points.txt").write_text(f"[pipekit]\n{eps}")

    def env(self, project: Project, *, modules: str | None = None, **extra: str) -> dict[str, str]:
        env = project.env(**extra)
        env["PYTHONPATH"] = os.pathsep.join([str(self.root), env["PYTHONPATH"]])
        if modules is not None:
            env["PIPEKIT_PLUGIN_MODULES"] = modules
        return env


@pytest.fixture
def site(tmp_path: Path) -> Site:
    return Site(tmp_path / "site")


def stage_module(*names: str, version: str = "1") -> str:
    """A plugin module registering copy-like stage processors ``names``."""
    classes = "\n".join(
        f"""
class P{i}(pipekit.Stage):
    name = {n!r}
    version = {version!r}

    def run(self, ctx):
        ctx.outputs[0].write_bytes(ctx.inputs[0].read_bytes())
"""
        for i, n in enumerate(names)
    )
    regs = "\n".join(f"    register(P{i}())" for i in range(len(names)))
    return (
        f"import pipekit\n{classes}\n\n@pipekit.hookimpl\ndef register_stages(register):\n{regs}\n"
    )


def backend_module(name: str, hook: str = "register_lock_backends") -> str:
    return f"""
import pipekit

def factory(options, *, state_dir):
    raise NotImplementedError

@pipekit.hookimpl
def {hook}(register):
    register({name!r}, factory)
"""


def error_lines(proc: subprocess.CompletedProcess[str]) -> list[str]:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if not line.startswith("pipekit: WARNING")]
    assert lines, proc.stderr
    for line in lines:
        assert line.startswith(PREFIX), line
    return [line[len(PREFIX) :] for line in lines]


def plugins_json(project: Project, env: dict[str, str]) -> dict[str, dict[str, Any]]:
    proc = project.cli("plugins", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["schema_version"] == 1
    return {p["name"]: p for p in doc["plugins"]}


def upper_pipeline(project: Project) -> None:
    project.write("in.txt", "alpha\nbeta\n")
    project.pipeline(
        [{"name": "up", "uses": "upper", "inputs": ["in.txt"], "outputs": ["out.txt"]}]
    )


# -- (a) a name registered twice names both distributions ------------------------


@pytest.mark.parametrize("command", [["plugins"], ["plugins", "--json"], ["run"]])
def test_stage_registered_twice_names_both_distributions(
    project: Project, site: Site, command: list[str]
) -> None:
    site.dist("dup-alpha", "1.0", {"alpha": "alpha_plugin"}, {"alpha_plugin": stage_module("dup")})
    site.dist("dup-beta", "2.5", {"beta": "beta_plugin"}, {"beta_plugin": stage_module("dup")})
    upper_pipeline(project)
    [message] = error_lines(project.cli(*command, env=site.env(project)))
    assert message == (
        "stage processor 'dup' is registered twice: by plugin 'alpha' of dup-alpha 1.0 "
        "and by plugin 'beta' of dup-beta 2.5; uninstall one, or disable it with "
        "PIPEKIT_DISABLE_PLUGINS=beta"
    )
    assert not (project.root / ".pipekit").exists()


@pytest.mark.parametrize("disable", ["beta", "dup-beta"])
def test_following_the_hint_resolves_the_clash(project: Project, site: Site, disable: str) -> None:
    site.dist("dup-alpha", "1.0", {"alpha": "alpha_plugin"}, {"alpha_plugin": stage_module("dup")})
    site.dist("dup-beta", "2.5", {"beta": "beta_plugin"}, {"beta_plugin": stage_module("dup")})
    plugins = plugins_json(project, site.env(project, PIPEKIT_DISABLE_PLUGINS=disable))
    assert plugins["alpha"]["registered"] == {"stages": ["dup"]}
    assert plugins["alpha"]["distribution"] == "dup-alpha"
    assert "beta" not in plugins


@pytest.mark.parametrize(
    ("hook", "label"),
    [
        ("register_lock_backends", "lock backend"),
        ("register_idempotency_stores", "idempotency store"),
        ("register_checkpoint_stores", "checkpoint store"),
        ("register_dead_letter_stores", "dead-letter store"),
    ],
)
def test_backend_registered_twice_names_both_distributions(
    project: Project, site: Site, hook: str, label: str
) -> None:
    site.dist(
        "mem-one", "0.1", {"mem1": "mem1_plugin"}, {"mem1_plugin": backend_module("mem", hook)}
    )
    site.dist(
        "mem-two", "0.2", {"mem2": "mem2_plugin"}, {"mem2_plugin": backend_module("mem", hook)}
    )
    assert error_lines(project.cli("plugins", env=site.env(project))) == [
        f"{label} 'mem' is registered twice: by plugin 'mem1' of mem-one 0.1 and by plugin "
        "'mem2' of mem-two 0.2; uninstall one, or disable it with PIPEKIT_DISABLE_PLUGINS=mem2"
    ]


def test_a_third_party_cannot_take_the_file_backend_name(project: Project, site: Site) -> None:
    site.dist(
        "fake-file",
        "9.0",
        {"fakefile": "fakefile_plugin"},
        {"fakefile_plugin": backend_module("file")},
    )
    [message] = error_lines(project.cli("plugins", env=site.env(project)))
    assert message == (
        f"lock backend 'file' is registered twice: by plugin 'file-backend' of pipekit-core "
        f"{pipekit.__version__} and by plugin 'fakefile' of fake-file 9.0; uninstall one, or "
        "disable it with PIPEKIT_DISABLE_PLUGINS=fakefile"
    )


def test_a_third_party_cannot_take_a_builtin_stage_name(project: Project, site: Site) -> None:
    site.dist(
        "my-upper", "1.0", {"myupper": "myupper_plugin"}, {"myupper_plugin": stage_module("upper")}
    )
    [message] = error_lines(project.cli("plugins", env=site.env(project)))
    assert "stage processor 'upper' is registered twice" in message
    assert f"pipekit-stages {dist_version('pipekit-stages')}" in message
    assert "my-upper 1.0" in message


def test_two_plugins_with_one_entry_point_name(project: Project, site: Site) -> None:
    site.dist("twin-a", "1.0", {"twin": "twin_a"}, {"twin_a": stage_module("ta")})
    site.dist("twin-b", "1.0", {"twin": "twin_b"}, {"twin_b": stage_module("tb")})
    [message] = error_lines(project.cli("plugins", env=site.env(project)))
    assert message.startswith("two plugins are named 'twin': ")
    assert "twin-a 1.0 (twin_a)" in message and "twin-b 1.0 (twin_b)" in message
    ok = plugins_json(project, site.env(project, PIPEKIT_DISABLE_PLUGINS="twin-b"))
    assert ok["twin"]["distribution"] == "twin-a"


def test_one_plugin_registering_a_name_twice(project: Project, site: Site) -> None:
    site.module("selfdup", stage_module("same", "same"))
    assert error_lines(project.cli("plugins", env=site.env(project, modules="selfdup"))) == [
        "plugin module 'selfdup' (from PIPEKIT_PLUGIN_MODULES) registered the stage "
        "processor 'same' twice"
    ]


# -- (b) unknown names list the ones that exist ----------------------------------


def test_unknown_stage_processor_lists_the_registered_ones(project: Project) -> None:
    from pipekit.plugins._manager import load_registry

    registry = load_registry()
    with pytest.raises(pipekit.PluginError) as info:
        registry.get("stages", "revers")
    message = str(info.value)
    assert message.startswith(
        "unknown stage processor 'revers' (did you mean 'reverse'?); registered: "
    )
    names = message.rpartition("registered: ")[2].split(", ")
    assert names == sorted(names)
    assert BUILTIN_STAGES | {"reverse", "linecount"} <= set(names)


@pytest.mark.parametrize("kind", ["lock_backends", "idempotency_stores", "checkpoint_stores"])
def test_unknown_backend_kind_lists_the_registered_ones(kind: str) -> None:
    from pipekit.plugins._manager import KIND_LABEL, load_registry

    registry = load_registry()
    with pytest.raises(pipekit.PluginError) as info:
        registry.get(kind, "nope")
    registered = ", ".join(sorted(getattr(registry, kind)))
    assert "file" in registered
    assert str(info.value) == f"unknown {KIND_LABEL[kind]} 'nope'; registered: {registered}"


def test_unknown_backend_in_a_run_lists_the_registered_ones(project: Project) -> None:
    upper_pipeline(project)
    backends = ", ".join(pipekit.load_registry().backend_names())
    assert error_lines(project.cli("run", "--backend", "nope")) == [
        f"--backend: unknown backend 'nope'; registered: {backends}"
    ]


def test_redis_without_its_package_says_to_install_it() -> None:
    from pipekit.plugins._manager import load_registry

    registry = load_registry(entry_points=False)  # as if pipekit-backend-redis were absent
    assert registry.unknown_backend_message("redis") == (
        "unknown backend 'redis'; registered: file (is pipekit-backend-redis installed?)"
    )


def test_a_backend_registered_for_only_some_kinds_says_what_is_missing(
    project: Project, site: Site
) -> None:
    site.module("halfplug", backend_module("half"))
    upper_pipeline(project)
    env = site.env(project, modules="pipekit_testplugin,halfplug")
    assert error_lines(project.cli("run", "--backend", "half", env=env)) == [
        "--backend: backend 'half' is incomplete: plugin module 'halfplug' (from "
        "PIPEKIT_PLUGIN_MODULES) registered it as lock backend but no plugin registered its "
        "idempotency store and checkpoint store; usable backends: "
        + ", ".join(pipekit.load_registry().backend_names())
    ]


# -- (c) hookimpls that match no hookspec -----------------------------------------


BAD_HOOKS = {
    "typo_hook": (
        """
        import pipekit

        @pipekit.hookimpl
        def register_stage(register):
            pass
        """,
        "implements 'register_stage', which is not a pipekit hook (did you mean "
        "'register_stages'?); hooks: on_record_failed, on_run_end, on_run_start, on_stage_end, "
        "on_stage_start, register_checkpoint_stores, register_dead_letter_stores, "
        "register_idempotency_stores, register_lock_backends, register_stages",
    ),
    "observer_typo": (
        """
        import pipekit

        @pipekit.hookimpl
        def on_stage_finish(run, stage, result):
            pass
        """,
        "implements 'on_stage_finish', which is not a pipekit hook (did you mean 'on_stage_end'?)",
    ),
    "wrong_arg": (
        """
        import pipekit

        @pipekit.hookimpl
        def register_stages(reg):
            pass
        """,
        ": hook register_stages(reg) takes 'reg', which pipekit does not pass; the hook is "
        "register_stages(register)",
    ),
    "wrong_observer_arg": (
        """
        import pipekit

        @pipekit.hookimpl
        def on_stage_end(run, stage, outcome):
            pass
        """,
        ": hook on_stage_end(run, stage, outcome) takes 'outcome', which pipekit does not "
        "pass; the hook is on_stage_end(run, stage, result)",
    ),
}


@pytest.mark.parametrize("module", sorted(BAD_HOOKS))
def test_hookimpl_matching_no_hookspec_fails_at_start_up_naming_the_plugin(
    project: Project, site: Site, module: str
) -> None:
    source, expected = BAD_HOOKS[module]
    site.module(module, source)
    upper_pipeline(project)
    env = site.env(project, modules=f"pipekit_testplugin,{module}")
    for command in (["plugins"], ["run"]):
        [message] = error_lines(project.cli(*command, env=env))
        assert message.startswith(f"plugin module {module!r} (from PIPEKIT_PLUGIN_MODULES)")
        assert expected in message
        assert message.endswith(
            f"; remove it from PIPEKIT_PLUGIN_MODULES, or disable it with "
            f"PIPEKIT_DISABLE_PLUGINS={module}"
        )
    assert not (project.root / "out.txt").exists()
    assert not (project.root / ".pipekit").exists()


def test_hook_validation_names_the_distribution_of_an_entry_point(
    project: Project, site: Site
) -> None:
    site.dist("typo-plugin", "3.1", {"typo": "typo_mod"}, {"typo_mod": BAD_HOOKS["typo_hook"][0]})
    [message] = error_lines(project.cli("plugins", env=site.env(project)))
    assert message.startswith("plugin 'typo' of typo-plugin 3.1 implements 'register_stage'")
    assert message.endswith("; disable it with PIPEKIT_DISABLE_PLUGINS=typo")


def test_optional_hooks_and_extra_defaulted_arguments_are_accepted(site: Site) -> None:
    from pipekit.plugins._manager import load_registry

    class Plugin:
        @pipekit.hookimpl(optionalhook=True)
        def some_future_hook(self) -> None:
            pass

        @pipekit.hookimpl
        def on_run_start(self, run: Any) -> None:  # fewer arguments than the spec: fine
            pass

    registry = load_registry(extra_plugins=(("fine", Plugin()),), entry_points=False)
    assert "on_run_start" in next(p for p in registry.plugins if p.name == "fine").hooks


# -- (d) disabling plugins --------------------------------------------------------


@pytest.mark.parametrize("disable", ["stages", "pipekit-stages", "Pipekit_Stages", "nope, stages"])
def test_disable_pipekit_stages_by_entry_point_or_distribution_name(
    project: Project, disable: str
) -> None:
    env = project.env(PIPEKIT_DISABLE_PLUGINS=disable)
    plugins = plugins_json(project, env)
    assert "stages" not in plugins
    assert not any(p["distribution"] == "pipekit-stages" for p in plugins.values())
    assert {"file-backend", "reverse", "pipekit_testplugin"} <= set(plugins)

    text = project.cli("plugins", env=env)
    assert text.returncode == 0
    assert "disabled: stages" in text.stdout.splitlines()

    upper_pipeline(project)
    for command in (["run"], ["status"]):
        [message] = error_lines(project.cli(*command, env=env))
        assert message.startswith(
            f"{project.file.resolve()}: stage 'up' (stages[0]), field 'uses': "
            "unknown stage processor 'upper'"
        )
        assert message.endswith("; disabled by PIPEKIT_DISABLE_PLUGINS: stages (pipekit-stages)")
    assert not (project.root / "out.txt").exists()


def test_disabling_a_name_that_matches_nothing_warns(project: Project) -> None:
    proc = project.cli("plugins", "--json", env=project.env(PIPEKIT_DISABLE_PLUGINS="stagez"))
    assert proc.returncode == 0
    assert "stages" in {p["name"] for p in json.loads(proc.stdout)["plugins"]}
    assert (
        "PIPEKIT_DISABLE_PLUGINS names 'stagez', which matches no installed plugin" in proc.stderr
    )


def test_disable_a_plugin_module(project: Project) -> None:
    env = project.env(PIPEKIT_DISABLE_PLUGINS="pipekit_testplugin")
    plugins = plugins_json(project, env)
    assert "pipekit_testplugin" not in plugins
    proc = project.cli("plugins", env=env)
    assert "disabled: pipekit_testplugin" in proc.stdout


# -- (e) pipekit plugins ------------------------------------------------------------


def test_plugins_json_lists_distribution_version_hooks_and_registrations(
    project: Project,
) -> None:
    plugins = plugins_json(project, project.env())
    assert plugins["file-backend"] == {
        "name": "file-backend",
        "distribution": "pipekit-core",
        "version": pipekit.__version__,
        "module": "pipekit.plugins._file_backend",
        "hooks": BACKEND_HOOKS,
        "registered": {
            "lock_backends": ["file"],
            "idempotency_stores": ["file"],
            "checkpoint_stores": ["file"],
            "dead_letter_stores": ["file"],
        },
    }
    stages = plugins["stages"]
    assert stages["distribution"] == "pipekit-stages"
    assert stages["version"] == dist_version("pipekit-stages")
    assert stages["module"] == "pipekit_stages.plugin"
    assert stages["hooks"] == ["register_stages"]
    assert set(stages["registered"]) == {"stages"}
    assert BUILTIN_STAGES <= set(stages["registered"]["stages"])
    assert plugins["reverse"] == {
        "name": "reverse",
        "distribution": "pipekit-reverse",
        "version": dist_version("pipekit-reverse"),
        "module": "pipekit_reverse",
        "hooks": ["register_stages"],
        "registered": {"stages": ["linecount", "reverse"]},
    }
    test = plugins["pipekit_testplugin"]
    assert test["distribution"] == "(PIPEKIT_PLUGIN_MODULES)"
    assert {"sleep", "flaky", "side-effect"} <= set(test["registered"]["stages"])
    # every registered name belongs to exactly one plugin
    seen: set[tuple[str, str]] = set()
    for p in plugins.values():
        for kind, names in p["registered"].items():
            for n in names:
                assert (kind, n) not in seen
                seen.add((kind, n))


def test_plugins_json_lists_observer_hooks(project: Project, site: Site) -> None:
    site.module(
        "watcher",
        """
        import pipekit

        @pipekit.hookimpl
        def on_run_end(run, summary):
            pass

        @pipekit.hookimpl
        def on_stage_end(run, stage, result):
            pass
        """,
    )
    plugins = plugins_json(project, site.env(project, modules="watcher"))
    assert plugins["watcher"]["hooks"] == ["on_run_end", "on_stage_end"]
    assert plugins["watcher"]["registered"] == {}


def test_plugins_text_form(project: Project) -> None:
    proc = project.cli("plugins", env=project.env(PIPEKIT_PLUGIN_MODULES=""))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    lines = proc.stdout.splitlines()
    assert (
        f"file-backend  (pipekit-core {pipekit.__version__}, pipekit.plugins._file_backend)"
        in lines
    )
    assert (
        f"stages  (pipekit-stages {dist_version('pipekit-stages')}, pipekit_stages.plugin)"
    ) in lines
    assert f"reverse  (pipekit-reverse {dist_version('pipekit-reverse')}, pipekit_reverse)" in lines
    assert "    lock_backends: file" in lines
    assert "    stages: linecount, reverse" in lines
    stage_line = next(line for line in lines if line.startswith("    stages: concat"))
    assert BUILTIN_STAGES <= set(stage_line.split(": ")[1].split(", "))
    # one header per plugin, its registrations indented under it
    headers = [line for line in lines if not line.startswith(" ")]
    redis = _installed("pipekit-backend-redis")
    assert [h.split()[0] for h in headers] == ["file-backend", *redis, "reverse", "stages"]
    if redis:  # an entry-point plugin like any other, registering all four kinds
        v = dist_version("pipekit-backend-redis")
        assert f"redis  (pipekit-backend-redis {v}, pipekit_redis.plugin)" in lines
        assert "    checkpoint_stores: redis" in lines and "    lock_backends: redis" in lines


def _installed(dist: str) -> list[str]:
    """``["redis"]`` when the distribution is installed, else ``[]``."""
    from importlib.metadata import PackageNotFoundError

    try:
        dist_version(dist)
    except PackageNotFoundError:
        return []
    return ["redis"]


# -- (f) a third-party plugin runs in a pipeline --------------------------------------


def test_third_party_plugin_runs_through_the_cli(project: Project) -> None:
    project.write("in.txt", "abc\nhello\nxy\n")
    project.pipeline(
        [
            {
                "name": "rev",
                "uses": "reverse",
                "inputs": ["in.txt"],
                "outputs": ["rev.txt"],
                "params": {"suffix": "!"},
            },
            {
                "name": "count",
                "uses": "linecount",
                "inputs": ["rev.txt", "in.txt"],
                "outputs": ["count.txt"],
            },
        ]
    )
    summary = project.run_json()
    assert project.statuses(summary) == {"rev": "ok", "count": "ok"}
    assert project.read("rev.txt") == "cba!\nolleh!\nyx!\n"
    assert project.read("count.txt") == "6\n"
    again = project.run_json()
    assert project.statuses(again) == {"rev": "skipped", "count": "skipped"}

    project.pipeline(
        [
            {
                "name": "rev",
                "uses": "reverse",
                "inputs": ["in.txt"],
                "outputs": ["rev.txt"],
                "params": {"suffix": "?"},
            },
            {
                "name": "count",
                "uses": "linecount",
                "inputs": ["rev.txt", "in.txt"],
                "outputs": ["count.txt"],
            },
        ]
    )
    changed = project.run_json()
    assert project.reasons(changed)["rev"] == "params changed"
    assert project.read("rev.txt") == "cba?\nolleh?\nyx?\n"
    assert project.statuses(changed)["count"] == "ok"  # its input changed
    assert project.read("count.txt") == "6\n"


def test_third_party_params_are_checked_like_builtin_ones(project: Project) -> None:
    project.write("in.txt", "abc\n")
    project.pipeline(
        [
            {
                "name": "rev",
                "uses": "reverse",
                "inputs": ["in.txt"],
                "outputs": ["rev.txt"],
                "params": {"sufix": "!"},
            },
            {
                "name": "count",
                "uses": "linecount",
                "inputs": ["in.txt"],
                "outputs": ["n.txt"],
                "params": {"lines": True},
            },
        ]
    )
    file = project.file.resolve()
    assert error_lines(project.cli("run")) == [
        f"{file}: stage 'rev' (stages[0]), field 'params.sufix': unknown field "
        "(did you mean 'suffix'?)",
        f"{file}: stage 'count' (stages[1]), field 'params': this processor takes no params; "
        "remove 'lines'",
    ]


def test_disabling_the_third_party_plugin(project: Project) -> None:
    project.write("in.txt", "abc\n")
    project.pipeline(
        [{"name": "rev", "uses": "reverse", "inputs": ["in.txt"], "outputs": ["rev.txt"]}]
    )
    [message] = error_lines(
        project.cli("run", env=project.env(PIPEKIT_DISABLE_PLUGINS="pipekit-reverse"))
    )
    assert "unknown stage processor 'reverse'" in message
    assert message.endswith("disabled by PIPEKIT_DISABLE_PLUGINS: reverse (pipekit-reverse)")


# -- (g) a plugin that fails to import -------------------------------------------------


def test_plugin_module_that_fails_to_import(project: Project, site: Site) -> None:
    site.module("broken", "import this_module_does_not_exist\n")
    upper_pipeline(project)
    env = site.env(project, modules="pipekit_testplugin,broken")
    for command in (["plugins"], ["run"]):
        assert error_lines(project.cli(*command, env=env)) == [
            "plugin module 'broken' (from PIPEKIT_PLUGIN_MODULES) failed to import: "
            "ModuleNotFoundError: No module named 'this_module_does_not_exist'; remove it from "
            "PIPEKIT_PLUGIN_MODULES, or disable it with PIPEKIT_DISABLE_PLUGINS=broken"
        ]
    env["PIPEKIT_DISABLE_PLUGINS"] = "broken"
    assert project.run_json(env=env)["status"] == "ok"


def test_entry_point_plugin_that_fails_to_import(project: Project, site: Site) -> None:
    site.dist(
        "shaky",
        "0.3",
        {"shaky": "shaky_mod:plugin"},
        {"shaky_mod": "raise RuntimeError('database\\nunreachable')\n"},
    )
    upper_pipeline(project)
    env = site.env(project)
    for command in (["plugins"], ["run"]):
        assert error_lines(project.cli(*command, env=env)) == [
            "plugin 'shaky' of shaky 0.3 failed to load (shaky_mod:plugin): RuntimeError: "
            "database; unreachable; disable it with PIPEKIT_DISABLE_PLUGINS=shaky"
        ]
    for disable in ("shaky",):
        env["PIPEKIT_DISABLE_PLUGINS"] = disable
        assert project.run_json(env=env)["status"] == "ok"
        assert project.read("out.txt") == "ALPHA\nBETA\n"


def test_registration_hook_that_raises(project: Project, site: Site) -> None:
    site.module(
        "raiser",
        """
        import pipekit

        @pipekit.hookimpl
        def register_stages(register):
            raise KeyError("oops")
        """,
    )
    assert error_lines(project.cli("plugins", env=site.env(project, modules="raiser"))) == [
        "plugin module 'raiser' (from PIPEKIT_PLUGIN_MODULES) raised in register_stages: "
        "KeyError: 'oops'; remove it from PIPEKIT_PLUGIN_MODULES, or disable it with "
        "PIPEKIT_DISABLE_PLUGINS=raiser"
    ]


def test_a_module_named_in_env_and_installed_is_loaded_once(project: Project) -> None:
    plugins = plugins_json(
        project,
        project.env(PIPEKIT_PLUGIN_MODULES="pipekit_testplugin,pipekit_reverse,pipekit_testplugin"),
    )
    assert plugins["reverse"]["registered"] == {"stages": ["linecount", "reverse"]}
    assert "pipekit_reverse" not in plugins


# -- (h) registering the wrong thing ---------------------------------------------------


class _Good(pipekit.Stage):
    name = "good"
    version = "1"

    def run(self, ctx: Any) -> None:
        pass


class _IntVersion(pipekit.Stage):
    name = "intversion"
    version = 2  # type: ignore[assignment]

    def run(self, ctx: Any) -> None:
        pass


class _NoName(pipekit.Stage):
    version = "1"

    def run(self, ctx: Any) -> None:
        pass


class _BadParams(pipekit.Stage):
    name = "badparams"
    version = "1"
    Params = dict

    def run(self, ctx: Any) -> None:
        pass


def _registering(*objs: Any, hook: str = "register_stages") -> Any:
    class Plugin:
        pass

    def impl(register: Any) -> None:
        for obj in objs:
            register(*obj) if isinstance(obj, tuple) else register(obj)

    impl.__name__ = hook
    setattr(Plugin, hook, staticmethod(pipekit.hookimpl(impl)))
    return Plugin()


@pytest.mark.parametrize(
    ("objs", "hook", "expected"),
    [
        pytest.param(
            [_Good],
            "register_stages",
            "plugin 'bad' (registered in-process) registered the class _Good instead of an "
            "instance; register an instance: register(_Good())",
            id="class-not-instance",
        ),
        pytest.param(
            [object()],
            "register_stages",
            "plugin 'bad' (registered in-process) registered <object object at ",
            id="plain-object",
        ),
        pytest.param(
            ["upper"],
            "register_stages",
            "plugin 'bad' (registered in-process) registered 'upper', of type str; a stage "
            "processor must be an instance of a pipekit.Stage or pipekit.RecordStage subclass",
            id="a-string",
        ),
        pytest.param(
            [_IntVersion()],
            "register_stages",
            "plugin 'bad' (registered in-process): stage processor 'intversion' needs a string "
            "'version' (got 2)",
            id="version-not-a-string",
        ),
        pytest.param(
            [_NoName()],
            "register_stages",
            "plugin 'bad' (registered in-process): stage processor _NoName needs a non-empty "
            "string 'name'",
            id="no-name",
        ),
        pytest.param(
            [_BadParams()],
            "register_stages",
            "plugin 'bad' (registered in-process): stage processor 'badparams': Params must be "
            "an attrs class (or None), got <class 'dict'>",
            id="params-not-attrs",
        ),
        pytest.param(
            [("mem", "not callable")],
            "register_lock_backends",
            "plugin 'bad' (registered in-process): lock backend 'mem' factory is not callable",
            id="backend-factory-not-callable",
        ),
        pytest.param(
            [("", lambda options, *, state_dir: None)],
            "register_checkpoint_stores",
            "plugin 'bad' (registered in-process) registered a checkpoint store without a name",
            id="backend-without-name",
        ),
    ],
)
def test_registering_the_wrong_thing_is_a_clear_plugin_error(
    objs: list[Any], hook: str, expected: str
) -> None:
    from pipekit.plugins._manager import load_registry

    with pytest.raises(pipekit.PluginError) as info:
        load_registry(extra_plugins=(("bad", _registering(*objs, hook=hook)),), entry_points=False)
    assert str(info.value).startswith(expected), str(info.value)
    assert "\n" not in str(info.value)
    assert info.value.exit_code == 2


def test_registering_an_instance_works(project: Project) -> None:
    from pipekit.plugins._manager import load_registry

    registry = load_registry(extra_plugins=(("ok", _registering(_Good())),), entry_points=False)
    assert isinstance(registry.get("stages", "good"), _Good)
    assert next(p for p in registry.plugins if p.name == "ok").registered == {"stages": ["good"]}


def test_registering_a_class_through_the_cli(project: Project, site: Site) -> None:
    site.module(
        "classy",
        """
        import pipekit

        class Mine(pipekit.Stage):
            name = "mine"
            version = "1"

            def run(self, ctx):
                pass

        @pipekit.hookimpl
        def register_stages(register):
            register(Mine)
        """,
    )
    assert error_lines(project.cli("plugins", env=site.env(project, modules="classy"))) == [
        "plugin module 'classy' (from PIPEKIT_PLUGIN_MODULES) registered the class Mine "
        "instead of an instance; register an instance: register(Mine())"
    ]


# -- (i) an observer hook that raises ----------------------------------------------------


RAISING_OBSERVER = """
import os
import pipekit

LOG = os.environ["OBSERVER_LOG"]


def _note(what):
    with open(LOG, "a") as f:
        f.write(what + "\\n")


@pipekit.hookimpl
def on_run_start(run):
    _note("run_start")
    raise RuntimeError("observer broke in on_run_start")


@pipekit.hookimpl
def on_stage_start(run, stage):
    _note("stage_start " + stage.name)
    raise RuntimeError("observer broke in on_stage_start")


@pipekit.hookimpl
def on_stage_end(run, stage, result):
    _note("stage_end " + stage.name + " " + result.status)
    raise RuntimeError("observer broke in on_stage_end")


@pipekit.hookimpl
def on_run_end(run, summary):
    _note("run_end " + summary["status"])
    raise ValueError("observer broke in on_run_end")
"""


def test_an_observer_that_raises_does_not_change_the_run(project: Project, site: Site) -> None:
    site.module("raising_observer", RAISING_OBSERVER)
    log = project.root.parent / "observer.log"
    env = site.env(project, modules="pipekit_testplugin,raising_observer", OBSERVER_LOG=str(log))
    project.write("in.txt", "alpha\nbeta\n")
    effects = project.root.parent / "effects.log"
    project.pipeline(
        [
            {
                "name": "copy",
                "uses": "side-effect",
                "inputs": ["in.txt"],
                "outputs": ["work/a.txt"],
                "params": {"log": str(effects)},
            },
            {"name": "up", "uses": "upper", "inputs": ["work/a.txt"], "outputs": ["out/a.txt"]},
        ]
    )

    proc = project.cli("run", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["status"] == "ok"
    assert project.statuses(summary) == {"copy": "ok", "up": "ok"}
    assert project.read("out/a.txt") == "ALPHA\nBETA\n"
    assert len(effects.read_text().splitlines()) == 1
    # the hooks were called, and each failure was said, with the plugin's name
    assert log.read_text().splitlines() == [
        "run_start",
        "stage_start copy",
        "stage_end copy ok",
        "stage_start up",
        "stage_end up ok",
        "run_end ok",
    ]
    assert "plugin 'raising_observer' raised in on_stage_end: RuntimeError: observer broke" in (
        proc.stderr
    )

    # the state is intact: a rerun skips both, and status agrees
    again = project.run_json(env=env)
    assert project.statuses(again) == {"copy": "skipped", "up": "skipped"}
    assert project.reasons(again) == {"copy": "up to date", "up": "up to date"}
    assert len(effects.read_text().splitlines()) == 1
    status = project.cli("status", "--json", env=env)
    assert status.returncode == 0, status.stderr
    assert {s["name"]: s["status"] for s in json.loads(status.stdout)["stages"]} == {
        "copy": "up-to-date",
        "up": "up-to-date",
    }
    state = json.loads((project.root / ".pipekit" / "state.json").read_text())
    assert set(state["stages"]) == {"copy", "up"}
    run = json.loads((project.root / ".pipekit" / "runs" / f"{summary['run_id']}.json").read_text())
    assert run["status"] == "ok"


def test_an_observer_that_raises_does_not_hide_a_failure(project: Project, site: Site) -> None:
    site.module("raising_observer", RAISING_OBSERVER)
    log = project.root.parent / "observer.log"
    env = site.env(project, modules="pipekit_testplugin,raising_observer", OBSERVER_LOG=str(log))
    project.write("in.txt", "x\n")
    project.pipeline(
        [
            {
                "name": "flaky",
                "uses": "flaky",
                "inputs": ["in.txt"],
                "outputs": ["out.txt"],
                "params": {"counter": str(project.root.parent / "count"), "fail_times": 5},
                "retry": {"attempts": 1},
            },
        ]
    )
    summary = project.run_json(expect=1, env=env)
    assert summary["status"] == "failed"
    assert project.statuses(summary) == {"flaky": "failed"}
    assert "stage_end flaky failed" in log.read_text()


# -- entry points are scanned at every load -------------------------------------------

PROBE = """
from pipekit import load_registry
r = load_registry()
print(*sorted(f"{p.name}={p.distribution}:{p.version}" for p in r.plugins))
"""


def probe(env: dict[str, str], cwd: Path) -> list[str]:
    import sys

    out = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, cwd=cwd, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_a_distribution_installed_a_moment_ago_is_loaded(
    project: Project, site: Site, tmp_path: Path
) -> None:
    site.dist("first-plugin", "1.0", {"first": "first_mod"}, {"first_mod": stage_module("first-x")})
    env = site.env(project, PIPEKIT_CACHE_DIR=str(tmp_path / "cache"))
    assert "first=first-plugin:1.0" in probe(env, project.root)
    site.dist("later-plugin", "2.0", {"later": "later_mod"}, {"later_mod": stage_module("later-x")})
    after = probe(env, project.root)
    assert "first=first-plugin:1.0" in after and "later=later-plugin:2.0" in after
