"""The plugin manager: entry points, built-ins, and the name-keyed registry.

``load_registry()`` is the one factory: it loads every plugin of the
``pipekit`` entry-point group (minus those named in ``PIPEKIT_DISABLE_PLUGINS``)
and the modules named in ``PIPEKIT_PLUGIN_MODULES`` (local, unpackaged plugins),
registers core's own file backends, checks that every hookimpl matches a
hookspec, then calls the registration hooks one plugin at a time so that a
name registered twice is reported with both plugins' distributions.
``RegistryLoader`` loads it when first asked for: a plan from the plan cache
decides which stages are up to date without any plugin.

pluggy (which imports ``importlib.metadata``, about 25 ms) and the hook
specifications are imported by ``load_registry`` itself, not with this
module, which a no-op rerun imports.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import inspect
import logging
import os
import re
import threading
from collections.abc import Callable
from importlib import import_module
from typing import TYPE_CHECKING, Any

import attrs

from .. import __version__
from ..errors import PluginError
from ._processors import RecordStage, Stage

if TYPE_CHECKING:
    import pluggy

__all__ = [
    "ENTRY_POINT_GROUP",
    "DISABLE_ENV",
    "MODULES_ENV",
    "BUILTIN_PLUGINS",
    "PluginInfo",
    "Registration",
    "Registry",
    "RegistryLoader",
    "load_registry",
    "unknown_name_message",
]

ENTRY_POINT_GROUP = "pipekit"
DISABLE_ENV = "PIPEKIT_DISABLE_PLUGINS"
MODULES_ENV = "PIPEKIT_PLUGIN_MODULES"

log = logging.getLogger("pipekit.plugins")

# Plugins that ship inside pipekit-core itself: (plugin name, module path).
BUILTIN_PLUGINS: tuple[tuple[str, str], ...] = (("file-backend", "pipekit.plugins._file_backend"),)

# What plugins register (each through the hook ``register_<kind>``), and
# its name in messages.
KIND_LABEL = {
    "stages": "stage processor",
    "lock_backends": "lock backend",
    "idempotency_stores": "idempotency store",
    "checkpoint_stores": "checkpoint store",
    "dead_letter_stores": "dead-letter store",
}


@attrs.define
class PluginInfo:
    name: str
    distribution: str
    version: str
    module: str
    hooks: list[str] = attrs.field(factory=list)
    registered: dict[str, list[str]] = attrs.field(factory=dict)
    entry_point: bool = False
    """Whether it came from the entry-point group (``module`` is its value)."""

    def entry_point_row(self) -> list[str]:
        """What :func:`load_registry` needs to load it again without a scan."""
        return [self.name, self.distribution, self.version, self.module]

    def label(self) -> str:
        if self.distribution == f"({MODULES_ENV})":
            return f"plugin module {self.name!r} (from {MODULES_ENV})"
        if self.distribution == IN_PROCESS:
            return f"plugin {self.name!r} (registered in-process)"
        return f"plugin {self.name!r} of {self.distribution} {self.version}".rstrip()

    def disable_hint(self) -> str:
        if self.distribution == f"({MODULES_ENV})":
            return f"remove it from {MODULES_ENV}, or disable it with {DISABLE_ENV}={self.name}"
        if self.distribution == IN_PROCESS:
            return "do not register it"
        return f"disable it with {DISABLE_ENV}={self.name}"


IN_PROCESS = "(registered in-process)"


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
    dead_letter_stores: dict[str, Registration] = attrs.field(factory=dict)
    disabled_plugins: list[PluginInfo] = attrs.field(factory=list)
    """The plugins that ``PIPEKIT_DISABLE_PLUGINS`` kept out."""

    @property
    def disabled(self) -> list[str]:
        return sorted(p.name for p in self.disabled_plugins)

    def get(self, kind: str, name: str, *, where: str = "") -> Any:
        table: dict[str, Registration] = getattr(self, kind)
        reg = table.get(name)
        if reg is None:
            raise PluginError(
                unknown_name_message(KIND_LABEL[kind], name, table, where) + self._disabled_hint()
            )
        return reg.obj

    def code_digest(self, name: str) -> str | None:
        """For the stage processor ``name`` of a plugin that is a module of the
        project (``PIPEKIT_PLUGIN_MODULES``, registered in-process) rather
        than an installed distribution, whose ``version`` nobody bumps: the
        SHA-256 of its class's source file (None for an installed one)."""
        reg = self.stages.get(name)
        if reg is None or reg.plugin.distribution not in (f"({MODULES_ENV})", IN_PROCESS):
            return None
        try:
            source = inspect.getsourcefile(type(reg.obj))
            with open(source or "", "rb") as f:
                return hashlib.sha256(f.read()).hexdigest()[:16]
        except (TypeError, OSError):
            return None

    def backend_names(self) -> list[str]:
        """Names registered for all three backend kinds."""
        return sorted(
            set(self.lock_backends) & set(self.idempotency_stores) & set(self.checkpoint_stores)
        )

    def unknown_backend_message(self, name: str) -> str:
        """Why ``name`` is no usable backend, and which ones are."""
        kinds = ("lock_backends", "idempotency_stores", "checkpoint_stores")
        has = [k for k in kinds if name in getattr(self, k)]
        if has:
            missing = [KIND_LABEL[k] for k in kinds if k not in has]
            by = sorted({getattr(self, k)[name].plugin.label() for k in has})
            return (
                f"backend {name!r} is incomplete: {', '.join(by)} registered it as "
                f"{' and '.join(KIND_LABEL[k] for k in has)} but no plugin registered "
                f"its {' and '.join(missing)}; usable backends: "
                + (", ".join(self.backend_names()) or "none")
            )
        msg = unknown_name_message("backend", name, dict.fromkeys(self.backend_names()))
        if name == "redis" and not self._disabled_hint():
            msg += " (is pipekit-backend-redis installed?)"
        return msg + self._disabled_hint()

    def _disabled_hint(self) -> str:
        if not self.disabled_plugins:
            return ""
        names = ", ".join(
            f"{p.name} ({p.distribution})" if not p.distribution.startswith("(") else p.name
            for p in self.disabled_plugins
        )
        return f"; disabled by {DISABLE_ENV}: {names}"

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


def _norm(dist_name: str) -> str:
    """A distribution name as PEP 503 compares them: Pipekit_Stages == pipekit-stages."""
    return re.sub(r"[-_.]+", "-", dist_name).lower()


def _flat(text: str) -> str:
    return "; ".join(line.strip() for line in str(text).splitlines() if line.strip())


def _argnames(function: Any) -> list[str] | None:
    """The arguments pluggy would pass by name: positional ones without a default."""
    try:
        sig = inspect.signature(function)
    except (TypeError, ValueError):
        return None
    return [
        p.name
        for p in sig.parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]


def _check_hookimpls(pm: pluggy.PluginManager, obj: object, info: PluginInfo) -> None:
    """Every ``@pipekit.hookimpl`` of ``obj`` must name a pipekit hook and take
    only arguments that the hook passes; said with the plugin's name, at
    start-up, rather than a hook that silently never runs."""
    known = sorted(
        name
        for name, caller in vars(pm.hook).items()
        if not name.startswith("_") and caller.has_spec()
    )
    for attr in dir(obj):
        try:
            opts = pm.parse_hookimpl_opts(obj, attr)
        except Exception:
            continue
        if opts is None:
            continue
        function = getattr(obj, attr)
        hook_name = opts.get("specname") or attr
        caller = getattr(pm.hook, hook_name, None)
        spec = caller.spec if caller is not None and caller.has_spec() else None
        if spec is None:
            if opts.get("optionalhook"):
                continue
            close = difflib.get_close_matches(hook_name, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise PluginError(
                f"{info.label()} implements {hook_name!r}, which is not a pipekit hook{hint}; "
                f"hooks: {', '.join(known)}; {info.disable_hint()}"
            )
        args = _argnames(function)
        if args is None:
            continue
        extra = [a for a in args if a not in spec.argnames and a not in ("self", "cls")]
        if extra:
            raise PluginError(
                f"{info.label()}: hook {hook_name}({', '.join(args)}) takes "
                f"{', '.join(repr(a) for a in extra)}, which pipekit does not pass; "
                f"the hook is {hook_name}({', '.join(spec.argnames)}); {info.disable_hint()}"
            )


def load_registry(
    *,
    extra_plugins: tuple[tuple[str, object], ...] = (),
    entry_points: bool = True,
    known_entry_points: list[list[str]] | None = None,
) -> Registry:
    """Build the plugin manager and the registry of every registered name.

    ``extra_plugins`` are ``(name, module_or_object)`` pairs registered as if
    they came from an entry point (tests and embedding use this).
    ``known_entry_points``: the entry points an earlier scan of this same
    environment found (:meth:`PluginInfo.entry_point_row` of each, the
    plan cache keeps them), loaded by their values instead of scanning the
    installed distributions (``importlib.metadata``: ~15 ms); everything
    else is as with a scan.

    Every problem is a :class:`PluginError` naming the plugin (and its
    distribution) and how to disable it: a plugin that fails to import, a
    hookimpl that matches no hookspec or takes arguments the hook does not
    pass, a registration hook that raises or registers something that is not
    a processor, and a name registered twice.
    """
    import pluggy  # not with this module: see the module's docstring

    from . import _hookspecs as hookspecs

    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    disabled = {part.strip() for part in os.environ.get(DISABLE_ENV, "").split(",")}
    loading = _Loading(pm, disabled - {""})
    for name, modpath in BUILTIN_PLUGINS:
        loading.add(import_module(modpath), PluginInfo(name, "pipekit-core", __version__, modpath))
    if known_entry_points is not None:
        for name, dist_name, dist_version, value in known_entry_points:
            load = functools.partial(_load_value, value)
            loading.add_entry_point(name, dist_name, dist_version, value, load)
    elif entry_points:
        loading.add_entry_points()
    loading.add_plugin_modules()
    for name, obj in extra_plugins:
        loading.add(obj, PluginInfo(name, IN_PROCESS, "", getattr(obj, "__name__", repr(obj))))
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:  # _check_hookimpls should have said it
        name = pm.get_name(exc.plugin) or repr(exc.plugin)
        raise PluginError(f"plugin {name!r}: {_flat(str(exc))}") from exc
    loading.warn_unmatched()

    registry = Registry(pm, loading.plugins, disabled_plugins=loading.skipped)
    by_name = {p.name: p for p in loading.plugins}
    for info in loading.plugins:
        callers = pm.get_hookcallers(pm.get_plugin(info.name)) or []
        info.hooks = sorted(caller.name for caller in callers if caller.name)
    for kind in KIND_LABEL:
        hookname = f"register_{kind}"
        for impl in getattr(pm.hook, hookname).get_hookimpls():
            _call_register(registry, kind, impl.function, by_name[impl.plugin_name], hookname)
    return registry


class _Loading:
    """The plugins being loaded into ``pm``, those ``PIPEKIT_DISABLE_PLUGINS``
    kept out, and which of its names matched one."""

    def __init__(self, pm: pluggy.PluginManager, disabled: set[str]) -> None:
        self.pm = pm
        self.disabled = disabled
        self.matched: set[str] = set()
        self.plugins: list[PluginInfo] = []
        self.skipped: list[PluginInfo] = []

    def add(self, obj: object, info: PluginInfo) -> None:
        import pluggy  # see the module's docstring

        _check_hookimpls(self.pm, obj, info)
        try:
            self.pm.register(obj, name=info.name)
        except pluggy.PluginValidationError as exc:
            raise PluginError(f"{info.label()}: {_flat(str(exc))}; {info.disable_hint()}") from exc
        except ValueError as exc:  # the same object or name twice
            raise PluginError(f"{info.label()}: {exc}") from exc
        self.plugins.append(info)

    def skip(self, info: PluginInfo, names: set[str]) -> bool:
        """Whether ``info`` is disabled by one of ``names`` (noted if so)."""
        hit = names & self.disabled
        if hit:
            self.matched |= hit
            self.skipped.append(info)
        return bool(hit)

    def add_entry_points(self) -> None:
        from importlib import metadata  # not with this module: see its docstring

        for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            dist_name = ep.dist.metadata["Name"] if ep.dist is not None else "?"
            dist_version = ep.dist.version if ep.dist is not None else "?"
            self.add_entry_point(ep.name, dist_name, dist_version, ep.value, load=ep.load)

    def add_entry_point(
        self, name: str, dist_name: str, dist_version: str, value: str, load: Callable[[], Any]
    ) -> None:
        info = PluginInfo(name, dist_name, dist_version, value, entry_point=True)
        by_dist = {n for n in self.disabled if _norm(n) == _norm(dist_name)}
        if self.skip(info, {name} | by_dist):
            return
        if self.pm.get_plugin(name) is not None:
            other = next(p for p in self.plugins if p.name == name)
            raise PluginError(
                f"two plugins are named {name!r}: {other.distribution} "
                f"{other.version} ({other.module}) and {dist_name} {dist_version} "
                f"({value}); uninstall one, or disable both with "
                f"{DISABLE_ENV}={name} (or one by its distribution name, e.g. "
                f"{DISABLE_ENV}={dist_name})"
            )
        try:
            obj = load()
        except Exception as exc:  # a broken plugin must say which one
            raise PluginError(
                f"{info.label()} failed to load ({value}): "
                f"{type(exc).__name__}: {_flat(str(exc))}; {info.disable_hint()}"
            ) from exc
        self.add(obj, info)

    def add_plugin_modules(self) -> None:
        """The modules named in ``PIPEKIT_PLUGIN_MODULES``."""
        for modpath in [m.strip() for m in os.environ.get(MODULES_ENV, "").split(",")]:
            info = PluginInfo(modpath, f"({MODULES_ENV})", "", modpath)
            if not modpath or self.skip(info, {modpath}) or self.pm.get_plugin(modpath):
                continue  # empty, disabled or named twice
            try:
                module = import_module(modpath)
            except Exception as exc:
                raise PluginError(
                    f"{info.label()} failed to import: {type(exc).__name__}: "
                    f"{_flat(str(exc))}; {info.disable_hint()}"
                ) from exc
            if not self.pm.is_registered(module):  # else loaded through its entry point
                self.add(module, info)

    def warn_unmatched(self) -> None:
        unmatched = sorted(self.disabled - self.matched)
        if unmatched:
            log.warning(
                "%s names %s, which matches no installed plugin (plugins: %s)",
                DISABLE_ENV,
                ", ".join(repr(n) for n in unmatched),
                ", ".join(p.name for p in self.plugins) or "none",
            )


def _load_value(value: str) -> Any:
    """What an entry point's value (``module`` or ``module:attr.attr``) names,
    as ``EntryPoint.load`` finds it."""
    module_name, _, attributes = value.partition(":")
    obj = import_module(module_name.strip())
    for attribute in filter(None, attributes.strip().split(".")):
        obj = getattr(obj, attribute)
    return obj


def _call_register(
    registry: Registry, kind: str, function: Callable[..., Any], info: PluginInfo, hookname: str
) -> None:
    table: dict[str, Registration] = getattr(registry, kind)
    label = KIND_LABEL[kind]

    def add(name: str, obj: Any) -> None:
        if not isinstance(name, str) or not name:
            raise PluginError(f"{info.label()} registered a {label} without a name (got {name!r})")
        prior = table.get(name)
        if prior is not None:
            if prior.plugin is info:
                raise PluginError(f"{info.label()} registered the {label} {name!r} twice")
            raise PluginError(
                f"{label} {name!r} is registered twice: by {prior.plugin.label()} "
                f"and by {info.label()}; uninstall one, or {info.disable_hint()}"
            )
        table[name] = Registration(name, obj, info)
        info.registered.setdefault(kind, []).append(name)

    def register_factory(name: str, factory: Callable[..., Any]) -> None:
        if not callable(factory):
            raise PluginError(f"{info.label()}: {label} {name!r} factory is not callable")
        add(name, factory)

    def register_stage(processor: Any) -> None:
        if isinstance(processor, type):
            what = f"register an instance: register({processor.__name__}())"
            raise PluginError(
                f"{info.label()} registered the class {processor.__name__} "
                f"instead of an instance; {what}"
            )
        if not isinstance(processor, (Stage, RecordStage)):
            raise PluginError(
                f"{info.label()} registered {_short(processor)}, of type "
                f"{type(processor).__qualname__}; a stage processor must be an "
                "instance of a pipekit.Stage or pipekit.RecordStage subclass"
            )
        name = getattr(processor, "name", None)
        if not isinstance(name, str) or not name:
            raise PluginError(
                f"{info.label()}: stage processor {type(processor).__name__} "
                f"needs a non-empty string 'name' (got {name!r})"
            )
        if not isinstance(getattr(processor, "version", None), str):
            raise PluginError(
                f"{info.label()}: stage processor {name!r} needs a string 'version' "
                f"(got {getattr(processor, 'version', None)!r})"
            )
        params_cls = getattr(processor, "Params", None)
        if params_cls is not None and not (isinstance(params_cls, type) and attrs.has(params_cls)):
            raise PluginError(
                f"{info.label()}: stage processor {name!r}: Params must be an attrs "
                f"class (or None), got {params_cls!r}"
            )
        add(name, processor)

    try:
        function(register=register_stage if kind == "stages" else register_factory)
    except PluginError:
        raise
    except Exception as exc:  # a bug in a plugin must say which plugin
        raise PluginError(
            f"{info.label()} raised in {hookname}: {type(exc).__name__}: {_flat(str(exc))}; "
            f"{info.disable_hint()}"
        ) from exc


class RegistryLoader:
    """The registry of a plan, loaded by :func:`load_registry` when first
    asked for (once, whichever thread asks first), or given loaded."""

    def __init__(
        self, registry: Registry | None = None, known_entry_points: list[list[str]] | None = None
    ) -> None:
        self._lock = threading.Lock()
        self._registry = registry
        self._known_entry_points = known_entry_points

    def get(self) -> Registry:
        with self._lock:
            if self._registry is None:
                self._registry = load_registry(known_entry_points=self._known_entry_points)
            return self._registry


def _short(obj: Any) -> str:
    text = repr(obj)
    return text if len(text) <= 60 else text[:57] + "..."
