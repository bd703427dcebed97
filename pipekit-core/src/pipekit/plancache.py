"""A cache of validated pipelines, so that a rerun does not parse, structure
and validate the pipeline file, nor import a plugin, unless it must.

A cached plan holds what deciding "up to date?" needs: each stage's
processor name and version, canonical params, input and output paths and
dependencies. It is valid while all of these are unchanged:

- the pipeline file (size, mtime_ns, inode); for a file changed within the
  racy window of its store (2 s: a later change in the same mtime tick would
  leave those equal), its content's SHA-256 too, of the bytes the plan was
  made from;
- pipekit's version, the environment (``sys.prefix``) and Python's version,
  and every ``sys.path`` folder's mtime
  (installing or removing a distribution changes its folder);
- the file of every plugin module and of every processor's class (a bumped
  ``version`` is an edit of that file);
- ``PIPEKIT_DISABLE_PLUGINS``, ``PIPEKIT_PLUGIN_MODULES`` and ``--backend``.

Stages that must run are bound to their real processors at the moment they
run. Where the processor came from a plugin module's ``register_stages``
function, the cache names that module and binding imports just it and calls
that function (no entry-point scan, no plugin manager); otherwise the plugin
manager is loaded. A stage's config and params are rebuilt as a full load
builds them (:mod:`pipekit.exact_structure`, else cattrs). A processor
whose version no longer matches the cached one drops the cache and fails the
stage with a message to run again.

The cache lives in ``$PIPEKIT_CACHE_DIR`` or ``$XDG_CACHE_HOME/pipekit``
(default ``~/.cache/pipekit``); set ``PIPEKIT_PLAN_CACHE=0`` to turn it off.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from . import _json
from .errors import StageFailed

__all__ = ["load", "store", "CachedPipeline", "CachedStage", "ProcessorRef", "enabled"]

FORMAT = 7
log = logging.getLogger("pipekit.plancache")
RACY_NS = 2_000_000_000


def enabled() -> bool:
    return os.environ.get("PIPEKIT_PLAN_CACHE", "1") not in ("0", "false", "no", "off")


def _cache_dir() -> Path:
    explicit = os.environ.get("PIPEKIT_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pipekit"


def _cache_path(file: Path, backend_override: str | None) -> Path:
    ident = f"{file}\0{backend_override or ''}".encode()
    return _cache_dir() / "plans" / f"{hashlib.sha256(ident).hexdigest()[:32]}.json"


def _stat_sig(path: str) -> list[Any] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def _environment_sig(backend_override: str | None) -> list[Any]:
    from . import __version__

    # sys.path[0] is the script's folder or the current one: it differs
    # between `pipekit` and `python -m pipekit` and holds no installed plugin.
    folders = [
        [p, (_stat_sig(p) or [None, None])[1]] for p in sys.path[1:] if p and os.path.isdir(p)
    ]
    return [
        __version__,
        sys.prefix,  # not sys.executable: `python` and `python3.11` are one venv
        sys.version,
        os.environ.get("PIPEKIT_DISABLE_PLUGINS", ""),
        os.environ.get("PIPEKIT_PLUGIN_MODULES", ""),
        backend_override or "",
        folders,
    ]


class ProcessorRef:
    """What the cheap path knows of a processor: its name and version."""

    __slots__ = ("name", "version")

    def __init__(self, name: str, version: str) -> None:
        self.name = name
        self.version = version


class _LazyRegistry:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._registry: Any = None

    def get(self) -> Any:
        with self._lock:
            if self._registry is None:
                from .plugins import load_registry

                self._registry = load_registry()
            return self._registry


class CachedStage:
    """A stage from a cached plan; the processor, params and config are bound
    on first use (only stages that run need them)."""

    def __init__(self, doc: dict[str, Any], pipeline: CachedPipeline) -> None:
        self.name: str = doc["name"]
        self.index: int = doc["index"]
        self.ref = ProcessorRef(doc["uses"], doc["version"])
        self.params_canonical: bytes = doc["params"].encode()
        self.inputs: list[str] = doc["inputs"]
        self.outputs: list[str] = doc["outputs"]
        self.input_paths: list[str] = doc["input_paths"]
        self.output_files: list[str] = doc["output_paths"]
        self.deps: list[str] = doc["deps"]
        self._raw: dict[str, Any] = doc["raw"]
        self._module: str | None = doc["module"]
        self._pipeline = pipeline
        self._bound: tuple[Any, Any, Any] | None = None

    @property
    def output_paths(self) -> list[Path]:
        return [Path(p) for p in self.output_files]

    def _bind(self) -> tuple[Any, Any, Any]:
        if self._bound is None:
            from . import config as _config

            processor = None
            if self._module is not None:
                processor = processor_from_module(self._module, self.ref.name)
            if processor is None:
                processor = self._pipeline.registry.get().get("stages", self.ref.name)
            if processor.version != self.ref.version:
                self._pipeline.invalidate()
                raise StageFailed(
                    f"processor {self.ref.name!r} is now version {processor.version}, "
                    f"not {self.ref.version}: the plan cache was stale and is dropped; run again"
                )
            cfg = _config.structure_valid(self._raw, _config.StageConfig)
            params = _config.structure_params(getattr(processor, "Params", None), cfg.params)
            self._bound = (processor, params, cfg)
        return self._bound

    @property
    def processor(self) -> Any:
        return self._bind()[0]

    @property
    def params(self) -> Any:
        return self._bind()[1]

    @property
    def config(self) -> Any:
        return self._bind()[2]


def processor_from_module(module_name: str, name: str) -> Any:
    """The processor ``name`` that module ``module_name``'s ``register_stages``
    registers, or None (the caller then loads every plugin)."""
    import importlib

    try:
        hook = getattr(importlib.import_module(module_name), "register_stages", None)
        found: list[Any] = []
        if callable(hook):
            hook(found.append)
    except Exception as exc:  # the full plugin load reports it properly
        log.debug("plan cache: binding through %s failed: %s", module_name, exc)
        return None
    return next((p for p in found if getattr(p, "name", None) == name), None)


def _binding_module(registry: Any, processor_name: str, processor: Any) -> str | None:
    """The module to bind ``processor_name`` through, if its plugin is a
    module whose ``register_stages`` registers this very processor type."""
    reg = registry.stages.get(processor_name)
    if reg is None:
        return None
    plugin = registry.plugin_manager.get_plugin(reg.plugin.name)
    if not inspect.ismodule(plugin):
        return None
    found = processor_from_module(plugin.__name__, processor_name)
    if found is None or type(found) is not type(processor):
        return None
    return str(plugin.__name__)


class _Backend:
    """The ``[backend]`` table of a cached plan (what ``BackendConfig`` holds)."""

    __slots__ = ("name", "options")

    def __init__(self, name: str, options: dict[str, Any]) -> None:
        self.name = name
        self.options = options


class _Network:
    """The ``[network]`` table of a cached plan (what ``NetworkConfig`` holds)."""

    __slots__ = ("allow", "isolation")

    def __init__(self, allow: list[str], isolation: str) -> None:
        self.allow = allow
        self.isolation = isolation


class CachedPipeline:
    def __init__(self, doc: dict[str, Any], cache_path: Path) -> None:
        self._cache_path = cache_path
        self.file = Path(doc["file"])
        self.root = Path(doc["root"])
        self.name: str = doc["name"]
        self.state_dir = Path(doc["state_dir"])
        self.backend = _Backend(doc["backend"]["name"], doc["backend"]["options"])
        self.network = _Network(doc["network"]["allow"], doc["network"]["isolation"])
        self.order: list[str] = doc["order"]
        self.registry = _LazyRegistry()
        self.has_observers: bool = doc["observers"]
        self.stages = {s["name"]: CachedStage(s, self) for s in doc["stages"]}

    def invalidate(self) -> None:
        try:
            os.unlink(self._cache_path)
        except FileNotFoundError:
            pass

    def downstream_of(self, names: Any) -> set[str]:
        from .pipeline import Pipeline

        return Pipeline.downstream_of(self, names)  # type: ignore[arg-type]


def load(file: Path, backend_override: str | None) -> CachedPipeline | None:
    """The cached plan of ``file`` if it is still valid, else None."""
    if not enabled():
        return None
    file = Path(os.path.abspath(file))
    path = _cache_path(file, backend_override)
    try:
        raw = path.read_bytes()
        head_end = raw.index(b"\n")
        doc = _json.loads(raw[:head_end])
    except (OSError, ValueError):
        return _miss("no cached plan")
    try:
        # The head line says whether the plan is still valid; the plan itself
        # (half a megabyte for 1,000 stages) is parsed only if it is.
        if doc.get("format") != FORMAT or doc.get("file_sig") != _stat_sig(str(file)):
            return _miss("the pipeline file changed")
        content = doc.get("file_sha256")
        if content is not None and _sha256_of(file) != content:
            return _miss("the pipeline file changed (its content)")
        if doc.get("env") != _environment_sig(backend_override):
            return _miss("the Python environment or plugin settings changed")
        for module_file, sig in doc.get("modules", []):
            if _stat_sig(module_file) != sig:
                return _miss(f"plugin file {module_file} changed")
        doc.update(_json.loads(raw[head_end + 1 :]))
        for source in doc.get("sources", []):
            if not os.path.exists(source):
                # a full load reports it as the config error it is
                return _miss(f"input {source} is missing")
        log.debug("plan cache: using %s", path)
        return CachedPipeline(doc, path)
    except (KeyError, TypeError, ValueError, AttributeError):
        return _miss("unreadable cached plan")


def _sha256_of(file: Path) -> str | None:
    try:
        return hashlib.sha256(file.read_bytes()).hexdigest()
    except OSError:
        return None


def _miss(why: str) -> CachedPipeline | None:
    log.debug("plan cache: not used: %s", why)
    return None


def store(pipeline: Any, registry: Any, backend_override: str | None) -> None:
    """Cache a freshly validated pipeline (unless its file is too new to trust)."""
    if not enabled():
        return
    file = pipeline.file
    sig = _stat_sig(str(file))
    if sig is None:
        return
    # A file changed within the racy window may change again without its
    # (size, mtime, inode) changing, or may have changed since it was read:
    # its plan is then valid only for the bytes it was made from.
    content = None
    if time.time_ns() - sig[1] < RACY_NS:
        content = pipeline.source_sha256
        if content is None:  # a Pipeline made by hand: nothing to check the file against
            return
    modules: dict[str, Any] = {}

    def note(obj: Any) -> None:
        try:
            f = inspect.getfile(obj)
        except (TypeError, OSError):
            return
        if f not in modules:
            modules[f] = _stat_sig(f)

    for _name, plugin in registry.plugin_manager.list_name_plugin():
        note(plugin if inspect.ismodule(plugin) else type(plugin))
    observer_hooks = {
        "on_run_start",
        "on_stage_start",
        "on_stage_end",
        "on_record_failed",
        "on_run_end",
    }
    observers = any(observer_hooks & set(p.hooks) for p in registry.plugins)
    stages = []
    modules_of: dict[str, str | None] = {}  # processor name -> its binding module
    for name in pipeline.order:
        st = pipeline.stages[name]
        note(type(st.processor))
        uses = st.processor.name
        if uses not in modules_of:
            modules_of[uses] = _binding_module(registry, uses, st.processor)
        raw = pipeline.raw["stages"][st.index]
        stages.append(
            {
                "name": st.name,
                "index": st.index,
                "uses": st.processor.name,
                "version": st.processor.version,
                "params": st.params_canonical.decode(),
                "inputs": st.inputs,
                "outputs": st.outputs,
                "input_paths": [str(p) for p in st.input_paths],
                "output_paths": st.output_files,
                "deps": st.deps,
                "raw": raw,
                "module": modules_of[uses],
            }
        )
    produced = {p for st in pipeline.stages.values() for p in st.output_files}
    sources = sorted({str(p) for st in pipeline.stages.values() for p in st.input_paths} - produced)
    head = {
        "format": FORMAT,
        "file_sig": sig,
        "file_sha256": content,
        "env": _environment_sig(backend_override),
        "modules": sorted([k, v] for k, v in modules.items()),
    }
    doc = {
        "sources": sources,
        "file": str(file),
        "root": str(pipeline.root),
        "name": pipeline.name,
        "state_dir": str(pipeline.state_dir),
        "backend": {"name": pipeline.backend.name, "options": pipeline.backend.options},
        "network": {"allow": pipeline.network.allow, "isolation": pipeline.network.isolation},
        "order": pipeline.order,
        "observers": observers,
        "stages": stages,
    }
    try:
        from .atomic import atomic_write_bytes

        atomic_write_bytes(
            _cache_path(Path(file), backend_override),
            _json.dumps(head) + b"\n" + _json.dumps(doc),
            durable=False,
        )
    except OSError:
        pass  # a cache that cannot be written is only a slower rerun
