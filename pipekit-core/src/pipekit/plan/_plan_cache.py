"""A cache of validated pipelines, so that a rerun does not parse, structure
and validate the pipeline file, nor import a plugin, unless it must.

A cached plan is the :class:`pipekit.plan._pipeline.Pipeline` a full load makes.
Its stages hold what deciding "up to date?" needs; their config, processor
and params are bound when first needed (:attr:`PlannedStage.binder`), the
processor taken from the plugin registry (loaded through pluggy with all its
checks). A plan is valid while the pipeline file's content (SHA-256), the
Python environment (pipekit's and Python's version, ``sys.prefix``, the
mtime of every ``sys.path`` folder), every plugin module's and processor
class's file, the plugin settings and ``--backend`` are unchanged; a
processor whose version no longer matches drops the cache and fails its
stage with a message to run again (see docs/user-guide.md#plan-cache).

No secret is written: backend options that hold one (a URL with a password,
an option named like a password, token, secret or credential) are not
stored, and are read from the pipeline file again. Plans are written 0600
in a 0700 folder.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .. import __version__, _json
from .._atomic import atomic_write_bytes
from ..errors import ConfigError, StageFailed
from ..plugins._manager import Registry, RegistryLoader
from ._config import (
    BackendConfig,
    NetworkConfig,
    StageConfig,
    parse_pipeline_bytes,
    structure_params,
    structure_valid,
)
from ._paths import is_glob, producers_of
from ._pipeline import Pipeline, PlannedStage

__all__ = ["load", "store", "enabled"]

FORMAT = 16
log = logging.getLogger("pipekit.plancache")
OBSERVER_HOOKS = frozenset(
    {"on_run_start", "on_stage_start", "on_stage_end", "on_record_failed", "on_run_end"}
)
SECRET_NAME = re.compile(r"pass|secret|token|credential|auth", re.IGNORECASE)


def enabled() -> bool:
    return os.environ.get("PIPEKIT_PLAN_CACHE", "1") not in ("0", "false", "no", "off")


def _cache_dir() -> Path:
    explicit = os.environ.get("PIPEKIT_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pipekit"


def cache_path(file: Path, backend_override: str | None) -> Path:
    """Where the plan of ``file`` (an absolute path) is cached."""
    ident = f"{file}\0{backend_override or ''}".encode()
    return _cache_dir() / "plans" / f"{hashlib.sha256(ident).hexdigest()[:32]}.json"


def _stat_sig(path: str) -> list[Any] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def _environment_sig(backend_override: str | None) -> list[Any]:
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


def holds_secret(value: Any, name: str = "") -> bool:
    """Whether backend options hold what must not be written to disk: a
    value under a name like ``password`` or ``token``, or a URL with a
    password in it."""
    if isinstance(value, dict):
        return any(holds_secret(v, str(k)) for k, v in value.items())
    if isinstance(value, list):
        return any(holds_secret(v, name) for v in value)
    if not value:
        return False
    if SECRET_NAME.search(name):
        return True
    return isinstance(value, str) and "://" in value and _has_password(value)


def _has_password(url: str) -> bool:
    try:
        return urlsplit(url).password is not None
    except ValueError:
        return True  # not a URL we can read: keep it off the disk


def load(file: Path, backend_override: str | None) -> Pipeline | None:
    """The cached plan of ``file`` if it is still valid, else None."""
    if not enabled():
        return None
    file = Path(os.path.abspath(file))
    path = cache_path(file, backend_override)
    try:
        doc = _json.loads(path.read_bytes())
        source = file.read_bytes()
    except (OSError, ValueError):
        return _miss("no cached plan")
    try:
        why = _stale(doc, source, backend_override)
        if why:
            return _miss(why)
        options = doc["backend"]["options"]
        if options is None:  # not cached: they hold a secret
            options = parse_pipeline_bytes(file, source).get("backend", {}).get("options", {})
        pipeline = _pipeline(doc, options, path)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, ConfigError):
        return _miss("unreadable cached plan")
    log.debug("plan cache: using %s", path)
    return pipeline


def _stale(doc: dict[str, Any], source: bytes, backend_override: str | None) -> str | None:
    """Why the cached plan ``doc`` is no longer valid, or None."""
    if doc["format"] != FORMAT or doc["file_sha256"] != hashlib.sha256(source).hexdigest():
        return "the pipeline file changed"
    if doc["env"] != _environment_sig(backend_override):
        return "the Python environment or plugin settings changed"
    for module_file, sig in doc["modules"]:
        if _stat_sig(module_file) != sig:
            return f"plugin file {module_file} changed"
    for var_file, digest in doc["var_files"]:
        try:
            if hashlib.sha256(Path(var_file).read_bytes()).hexdigest() != digest:
                return f"vars file {var_file} changed"
        except OSError:
            return f"vars file {var_file} cannot be read"
    for source_path in doc["sources"]:
        if not os.path.exists(source_path):
            return f"input {source_path} is missing"  # a full load says it as a config error
    return None


def _pipeline(doc: dict[str, Any], options: dict[str, Any], path: Path) -> Pipeline:
    registry = RegistryLoader(known_entry_points=doc["entry_points"])
    tables = {s["name"]: s["table"] for s in doc["stages"]}

    def binder(stage: PlannedStage) -> tuple[StageConfig, Any, Any]:
        """The stage's config (structured from its table as a full load
        does), its processor (from the plugin registry) and its params."""
        config = structure_valid(tables[stage.name], StageConfig)
        processor = registry.get().get("stages", stage.uses)
        if processor.version != stage.version:
            path.unlink(missing_ok=True)
            raise StageFailed(
                f"processor {stage.uses!r} is now version {processor.version}, "
                f"not {stage.version}: the plan cache was stale and is dropped; run again"
            )
        params = structure_params(getattr(processor, "Params", None), config.params)
        return config, processor, params

    stages = {
        s["name"]: PlannedStage(
            config=None,
            index=s["index"],
            processor=None,
            params=None,
            params_canonical=s["params"].encode(),
            inputs=s["inputs"],
            outputs=s["outputs"],
            input_files=s["input_files"],
            output_files=s["output_files"],
            deps=s["deps"],
            name=s["name"],
            uses=s["uses"],
            version=s["version"],
            code=s["code"],
            values=s["values"],
            binder=binder,
        )
        for s in doc["stages"]
    }
    return Pipeline(
        file=Path(doc["file"]),
        root=Path(doc["root"]),
        name=doc["name"],
        state_dir=Path(doc["state_dir"]),
        backend=BackendConfig(name=doc["backend"]["name"], options=options),
        stages=stages,
        order=doc["order"],
        raw={"stages": [s["table"] for s in sorted(doc["stages"], key=lambda s: s["index"])]},
        network=NetworkConfig(**doc["network"]),
        source_sha256=doc["file_sha256"],
        var_files=doc["var_files"],
        registry=registry,
        has_observers=doc["observers"],
    )


def _miss(why: str) -> Pipeline | None:
    log.debug("plan cache: not used: %s", why)
    return None


def store(pipeline: Pipeline, registry: Registry, backend_override: str | None) -> None:
    """Cache a freshly validated pipeline."""
    if not enabled() or pipeline.source_sha256 is None:
        return  # a Pipeline made by hand: nothing to check the file against
    doc = _document(pipeline, registry)
    doc.update(
        format=FORMAT,
        env=_environment_sig(backend_override),
        modules=_module_sigs(pipeline, registry),
        entry_points=[  # loaded again without a scan: the environment is the same
            p.entry_point_row()
            for p in registry.plugins + registry.disabled_plugins
            if p.entry_point
        ],
    )
    path = cache_path(pipeline.file, backend_override)
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        atomic_write_bytes(path, _json.dumps(doc), durable=False, mode=0o600)
    except OSError:
        pass  # a cache that cannot be written is only a slower rerun


def _module_sigs(pipeline: Pipeline, registry: Registry) -> list[list[Any]]:
    """[file, stat signature] of every plugin module and processor class."""
    objects: list[Any] = [
        plugin if inspect.ismodule(plugin) else type(plugin)
        for _name, plugin in registry.plugin_manager.list_name_plugin()
    ]
    objects += [type(st.processor) for st in pipeline.stages.values()]
    modules: dict[str, Any] = {}
    for obj in objects:
        try:
            f = inspect.getfile(obj)
        except (TypeError, OSError):
            continue
        if f not in modules:
            modules[f] = _stat_sig(f)
    return sorted([k, v] for k, v in modules.items())


def _document(pipeline: Pipeline, registry: Registry) -> dict[str, Any]:
    stages = [
        {
            "name": st.name,
            "index": st.index,
            "uses": st.uses,
            "version": st.version,
            "code": st.code,
            "values": st.values,
            "params": st.params_canonical.decode(),
            "inputs": st.inputs,
            "outputs": st.outputs,
            "input_files": st.input_files,
            "output_files": st.output_files,
            "deps": st.deps,
            "table": pipeline.raw["stages"][st.index],
        }
        for st in (pipeline.stages[name] for name in pipeline.order)
    ]
    producers = {key: (0, "") for st in pipeline.stages.values() for key in st.outputs}
    sources = {
        path
        for st in pipeline.stages.values()
        for key, path in zip(st.inputs, st.input_files)
        if not is_glob(key) and not producers_of(key, producers)
    }
    options = pipeline.backend.options
    return {
        "sources": sorted(sources),
        "file": str(pipeline.file),
        "file_sha256": pipeline.source_sha256,
        "var_files": pipeline.var_files,
        "root": str(pipeline.root),
        "name": pipeline.name,
        "state_dir": str(pipeline.state_dir),
        "backend": {
            "name": pipeline.backend.name,
            "options": None if holds_secret(options) else options,
        },
        "network": {"allow": pipeline.network.allow, "isolation": pipeline.network.isolation},
        "order": pipeline.order,
        "observers": any(OBSERVER_HOOKS & set(p.hooks) for p in registry.plugins),
        "stages": stages,
    }
