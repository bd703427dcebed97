"""The plugin manager: entry points, built-ins, and the name-keyed registry.

``load_registry()`` is the one factory: it loads every plugin of the
``pipekit`` entry-point group (minus those named in ``PIPEKIT_DISABLE_PLUGINS``)
and the modules named in ``PIPEKIT_PLUGIN_MODULES`` (local, unpackaged plugins),
registers core's own file backends, checks that every hookimpl matches a
hookspec, then calls the registration hooks one plugin at a time so that a
name registered twice is reported with both plugins' distributions.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable
from typing import Any

import attrs
import pluggy

from . import hookspecs
from .errors import PluginError

__all__ = [
    "ENTRY_POINT_GROUP",
    "DISABLE_ENV",
    "MODULES_ENV",
    "BUILTIN_PLUGINS",
    "PluginInfo",
    "Registration",
    "Registry",
    "load_registry",
    "unknown_name_message",
]

ENTRY_POINT_GROUP = "pipekit"
DISABLE_ENV = "PIPEKIT_DISABLE_PLUGINS"
MODULES_ENV = "PIPEKIT_PLUGIN_MODULES"

# Plugins that ship inside pipekit-core itself: (plugin name, module path).
BUILTIN_PLUGINS: tuple[tuple[str, str], ...] = (("file-backend", "pipekit.backends.file"),)

KINDS = {
    "stages": "register_stages",
    "lock_backends": "register_lock_backends",
    "idempotency_stores": "register_idempotency_stores",
    "checkpoint_stores": "register_checkpoint_stores",
}
KIND_LABEL = {
    "stages": "stage processor",
    "lock_backends": "lock backend",
    "idempotency_stores": "idempotency store",
    "checkpoint_stores": "checkpoint store",
}


@attrs.define
class PluginInfo:
    name: str
    distribution: str
    version: str
    module: str
    hooks: list[str] = attrs.field(factory=list)
    registered: dict[str, list[str]] = attrs.field(factory=dict)

    def label(self) -> str:
        return f"plugin {self.name!r} of {self.distribution} {self.version}"


@attrs.define
class Registration:
    name: str
    obj: Any
    plugin: PluginInfo


@attrs.define
class Registry:
    plugin_manager: pluggy.PluginManager
    plugins: list[PluginInfo]
    stages: dict[str, Registration] = attrs.field(factory=dict)
    lock_backends: dict[str, Registration] = attrs.field(factory=dict)
    idempotency_stores: dict[str, Registration] = attrs.field(factory=dict)
    checkpoint_stores: dict[str, Registration] = attrs.field(factory=dict)
    disabled: list[str] = attrs.field(factory=list)

    @property
    def hook(self) -> Any:
        return self.plugin_manager.hook

    def get(self, kind: str, name: str, *, where: str = "") -> Any:
        table: dict[str, Registration] = getattr(self, kind)
        reg = table.get(name)
        if reg is None:
            raise PluginError(unknown_name_message(KIND_LABEL[kind], name, table, where))
        return reg.obj

    def backend_names(self) -> list[str]:
        """Names registered for all three backend kinds."""
        return sorted(
            set(self.lock_backends) & set(self.idempotency_stores) & set(self.checkpoint_stores)
        )

    def to_json(self) -> list[dict[str, Any]]:
        return [
            {
                "name": p.name,
                "distribution": p.distribution,
                "version": p.version,
                "module": p.module,
                "hooks": sorted(p.hooks),
                "registered": {k: sorted(v) for k, v in p.registered.items()},
            }
            for p in self.plugins
        ]


def unknown_name_message(label: str, name: str, table: dict[str, Any], where: str = "") -> str:
    known = sorted(table)
    msg = f"unknown {label} {name!r}"
    if where:
        msg = f"{where}: {msg}"
    close = difflib.get_close_matches(name, known, n=1)
    if close:
        msg += f" (did you mean {close[0]!r}?)"
    msg += "; registered: " + (", ".join(known) if known else "none")
    if label == "stage processor" and not known:
        msg += " (is pipekit-stages installed?)"
    return msg


def _disabled_names() -> set[str]:
    raw = os.environ.get(DISABLE_ENV, "")
    return {part.strip() for part in raw.split(",") if part.strip()}


def load_registry(
    *, extra_plugins: tuple[tuple[str, object], ...] = (), entry_points: bool = True
) -> Registry:
    """Build the plugin manager and the registry of every registered name.

    ``extra_plugins`` are ``(name, module_or_object)`` pairs registered as if
    they came from an entry point (tests and embedding use this).
    """
    import importlib

    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    plugins: list[PluginInfo] = []
    disabled = _disabled_names()
    skipped: list[str] = []

    from . import __version__

    for name, modpath in BUILTIN_PLUGINS:
        module = importlib.import_module(modpath)
        pm.register(module, name=name)
        plugins.append(PluginInfo(name, "pipekit-core", __version__, modpath))

    if entry_points:
        from importlib.metadata import entry_points as _eps

        for ep in sorted(_eps(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            dist = getattr(ep, "dist", None)
            dist_name = dist.metadata["Name"] if dist is not None else "?"
            dist_version = dist.version if dist is not None else "?"
            if ep.name in disabled or dist_name in disabled:
                skipped.append(ep.name)
                continue
            if pm.get_plugin(ep.name) is not None:
                other = next(p for p in plugins if p.name == ep.name)
                raise PluginError(
                    f"two plugins are named {ep.name!r}: {other.distribution} and {dist_name}; "
                    f"uninstall one, or disable one with {DISABLE_ENV}={ep.name}"
                )
            try:
                obj = ep.load()
            except Exception as exc:  # a broken plugin must say which one
                raise PluginError(
                    f"plugin {ep.name!r} of {dist_name} {dist_version} failed to load "
                    f"({ep.value}): {type(exc).__name__}: {exc}; "
                    f"disable it with {DISABLE_ENV}={ep.name}"
                ) from exc
            pm.register(obj, name=ep.name)
            plugins.append(PluginInfo(ep.name, dist_name, dist_version, ep.value))

    for modpath in [m.strip() for m in os.environ.get(MODULES_ENV, "").split(",") if m.strip()]:
        if modpath in disabled:
            skipped.append(modpath)
            continue
        try:
            module = importlib.import_module(modpath)
        except Exception as exc:
            raise PluginError(
                f"plugin module {modpath!r} named in {MODULES_ENV} failed to import: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        if pm.get_plugin(modpath) is None:
            pm.register(module, name=modpath)
            plugins.append(PluginInfo(modpath, f"({MODULES_ENV})", "", modpath))

    for name, obj in extra_plugins:
        pm.register(obj, name=name)
        plugins.append(PluginInfo(name, "(registered in-process)", "", getattr(obj, "__name__", repr(obj))))

    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"plugin {exc.plugin_name!r}: {exc}") from exc

    registry = Registry(plugin_manager=pm, plugins=plugins, disabled=sorted(skipped))
    by_name = {p.name: p for p in plugins}
    for info in plugins:
        plugin = pm.get_plugin(info.name)
        info.hooks = sorted(
            caller.name for caller in (pm.get_hookcallers(plugin) or []) if caller.name
        )
    for kind, hookname in KINDS.items():
        caller = getattr(pm.hook, hookname)
        for impl in caller.get_hookimpls():
            info = by_name[impl.plugin_name]
            _call_register(registry, kind, impl.function, info)
    return registry


def _call_register(
    registry: Registry, kind: str, function: Callable[..., Any], info: PluginInfo
) -> None:
    table: dict[str, Registration] = getattr(registry, kind)
    label = KIND_LABEL[kind]

    def add(name: str, obj: Any) -> None:
        if not isinstance(name, str) or not name:
            raise PluginError(f"{info.label()} registered a {label} without a name")
        prior = table.get(name)
        if prior is not None:
            raise PluginError(
                f"{label} {name!r} is registered twice: by {prior.plugin.label()} "
                f"and by {info.label()}; uninstall one, or disable one with "
                f"{DISABLE_ENV}={info.name}"
            )
        table[name] = Registration(name, obj, info)
        info.registered.setdefault(kind, []).append(name)

    if kind == "stages":

        def register(processor: Any) -> None:
            from .stage import RecordStage, Stage

            if isinstance(processor, type):
                raise PluginError(
                    f"{info.label()} registered the class {processor.__name__}; "
                    "register an instance: register(MyStage())"
                )
            if not isinstance(processor, (Stage, RecordStage)):
                raise PluginError(
                    f"{info.label()} registered {processor!r}, which is neither a "
                    "pipekit.Stage nor a pipekit.RecordStage"
                )
            name = getattr(processor, "name", None)
            if not isinstance(getattr(processor, "version", None), str):
                raise PluginError(
                    f"{info.label()}: stage processor {name!r} needs a string 'version'"
                )
            add(name, processor)  # type: ignore[arg-type]

        function(register=register)
    else:

        def register_factory(name: str, factory: Callable[..., Any]) -> None:
            if not callable(factory):
                raise PluginError(f"{info.label()}: {label} {name!r} factory is not callable")
            add(name, factory)

        function(register=register_factory)
