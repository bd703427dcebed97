"""A loaded, validated pipeline: stages bound to processors, in DAG order."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import attrs

from ..errors import ConfigError, PluginError
from ..plugins._manager import RegistryLoader, load_registry
from . import _config
from ._config import StageConfig
from ._paths import PathRules, inside_another_output, is_folder, is_glob, path_key, producers_of
from ._templates import expand as expand_templates

__all__ = ["PlannedStage", "Pipeline", "load_pipeline"]


Binder = Callable[["PlannedStage"], tuple[StageConfig, Any, Any]]
"""What binds a stage of a cached plan when first needed: its config, its
processor (from the plugin registry) and its structured params."""


@attrs.define(eq=False)
class PlannedStage:
    """A stage of a plan. A plan from the plan cache gives its stages a
    ``binder`` instead of config, processor and params: deciding whether a
    stage is up to date needs only its name, its processor's name
    (``uses``) and ``version``, its canonical params and its paths."""

    _config: StageConfig | None = attrs.field(alias="config")
    index: int
    _processor: Any = attrs.field(alias="processor")
    _params: Any = attrs.field(alias="params")
    params_canonical: bytes
    inputs: list[str]
    outputs: list[str]
    input_files: list[str]
    """The inputs' absolute paths, as strings: deciding needs nothing more,
    and a plan of 1,000 stages loads 8 ms faster than with ``Path``s."""
    output_files: list[str]
    deps: list[str] = attrs.field(factory=list)
    name: str = attrs.field(
        kw_only=True, default=attrs.Factory(lambda st: st._config.name, takes_self=True)
    )
    uses: str = attrs.field(
        kw_only=True, default=attrs.Factory(lambda st: st._processor.name, takes_self=True)
    )
    version: str = attrs.field(
        kw_only=True, default=attrs.Factory(lambda st: st._processor.version, takes_self=True)
    )
    code: str | None = attrs.field(default=None, kw_only=True)
    """The digest of the processor's source file when it is not installed
    from a distribution (a module of the project): part of the fingerprint,
    so that editing it reruns its stages."""
    values: dict[str, Any] = attrs.field(factory=dict, kw_only=True)
    """The variables its strings used (``${train.lr}``) and their values:
    a rerun for changed params names the one that changed."""
    binder: Binder | None = attrs.field(default=None, kw_only=True, repr=False)
    _paths: tuple[list[Path], list[Path]] | None = attrs.field(default=None, init=False, repr=False)

    def _bound(self) -> None:
        binder = self.binder
        if binder is not None:
            self._config, self._processor, self._params = binder(self)
            self.binder = None

    @property
    def config(self) -> StageConfig:
        self._bound()
        assert self._config is not None
        return self._config

    @property
    def processor(self) -> Any:
        self._bound()
        return self._processor

    @property
    def params(self) -> Any:
        self._bound()
        return self._params

    @property
    def input_paths(self) -> list[Path]:
        return self._path_lists()[0]

    @property
    def output_paths(self) -> list[Path]:
        return self._path_lists()[1]

    def _path_lists(self) -> tuple[list[Path], list[Path]]:
        """``input_files`` and ``output_files`` as ``Path``s, made once,
        when a stage runs (deciding does without)."""
        if self._paths is None:
            self._paths = (
                [Path(p) for p in self.input_files],
                [Path(p) for p in self.output_files],
            )
        return self._paths


@attrs.define(eq=False)
class Pipeline:
    file: Path
    root: Path
    name: str
    state_dir: Path
    backend: _config.BackendConfig
    stages: dict[str, PlannedStage]
    order: list[str]
    raw: dict[str, Any]
    network: _config.NetworkConfig = attrs.field(factory=_config.NetworkConfig)
    source_sha256: str | None = None
    """SHA-256 of the pipeline file's bytes this was read from."""
    var_files: list[list[str]] = attrs.field(factory=list)
    """[path, SHA-256] of each file of ``vars`` it was read with."""
    registry: RegistryLoader = attrs.field(factory=RegistryLoader, kw_only=True)
    """The plugin registry the stages' processors come from."""
    has_observers: bool = attrs.field(default=True, kw_only=True)
    """False when no plugin implements an observer hook (known to a cached
    plan without loading the plugins)."""

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Pipeline:
        """The pipeline of the file at ``path``, validated, with every
        installed plugin (:class:`pipekit.ConfigError` says what is wrong)."""
        return load_pipeline(Path(path), load_registry())

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, root: str | os.PathLike[str]) -> Pipeline:
        """The pipeline of ``data`` (what a pipeline file holds), its paths
        relative to the folder ``root``."""
        file = Path(root).resolve() / "pipekit.toml"  # names it in messages
        return plan_pipeline(data, file, load_registry())

    def downstream_of(self, names: Iterable[str]) -> set[str]:
        """The named stages and every stage that depends on them."""
        children: dict[str, list[str]] = {n: [] for n in self.stages}
        for st in self.stages.values():
            for dep in st.deps:
                children[dep].append(st.name)
        seen: set[str] = set()
        todo = list(names)
        while todo:
            n = todo.pop()
            if n in seen:
                continue
            seen.add(n)
            todo.extend(children[n])
        return seen


Report = Callable[[int | None, str, str], None]
"""Notes a config problem: (stage index or None, field, message)."""


def load_pipeline(
    file: Path, registry: Any, *, backend_override: str | None = None, check_inputs: bool = True
) -> Pipeline:
    """Read, structure and validate a pipeline file; every problem found is
    reported at once (one line each, in file order), and nothing has run."""
    file = file.resolve()
    source = _config.read_pipeline_bytes(file)
    data = _config.parse_pipeline_bytes(file, source)
    return plan_pipeline(
        data,
        file,
        registry,
        source_sha256=hashlib.sha256(source).hexdigest(),
        backend_override=backend_override,
        check_inputs=check_inputs,
    )


def plan_pipeline(
    data: dict[str, Any],
    file: Path,
    registry: Any,
    *,
    source_sha256: str | None = None,
    backend_override: str | None = None,
    check_inputs: bool = True,
) -> Pipeline:
    """:func:`load_pipeline` of the plain data of a pipeline file at
    ``file`` (which names it in messages, and whose folder is the root)."""
    expanded = expand_templates(data, file)
    data = expanded.data
    cfg, errors = _config.structure_pipeline_lenient(data, file)
    root = file.parent

    def err(index: int | None, field: str, msg: str) -> None:
        if index is None:
            errors.append((-1, f"{file}: {_config.place(-1, None, field)}: {msg}"))
        else:
            where = _config.place(index, cfg.stages[index].name, field)
            errors.append((index, f"{file}: {where}: {msg}"))

    if not cfg.stages:
        raise ConfigError(f"{file}: no stages: add at least one [[stages]] table")

    backend = cfg.backend
    if backend_override:
        backend = attrs.evolve(backend, name=backend_override)
    if backend.name not in registry.backend_names():
        msg = registry.unknown_backend_message(backend.name)
        if backend_override:
            errors.append((-2, f"--backend: {msg}"))  # the command line: said first
        else:
            err(None, "backend.name", msg)

    state_dir = Path(os.path.normpath(root / cfg.state_dir))
    paths = PathRules(file, root, state_dir)
    state_problem = paths.state_dir_problem()
    if state_problem:
        err(None, "state_dir", state_problem)

    planned, producers = _plan_stages(cfg.stages, registry, paths, err, errors, data)
    for name, used in expanded.used.items():
        if name in planned:
            planned[name].values = used
    _link_stages(planned, producers, [sc.name for sc in cfg.stages], paths, check_inputs, err)
    if errors:
        raise ConfigError(_config.join_lines(errors))

    order = _toposort(planned, file)
    return Pipeline(
        file=file,
        root=root,
        name=cfg.name or (root.name if file.name in _config.DEFAULT_FILES else file.stem),
        state_dir=state_dir,
        backend=backend,
        stages=planned,
        order=order,
        raw=data,
        network=cfg.network,
        source_sha256=source_sha256,
        var_files=expanded.var_files,
        registry=RegistryLoader(registry),
    )


def _plan_stages(
    configs: list[StageConfig],
    registry: Any,
    paths: PathRules,
    err: Report,
    errors: list[tuple[int, str]],
    data: dict[str, Any],
) -> tuple[dict[str, PlannedStage], dict[str, tuple[int, str]]]:
    """Each stage bound to its processor and params, its paths checked:
    (stages by name, the (index, name) of the stage producing each output)."""
    from .. import _json

    seen_names: dict[str, int] = {}
    producers: dict[str, tuple[int, str]] = {}
    planned: dict[str, PlannedStage] = {}
    for i, sc in enumerate(configs):
        if sc.name in seen_names:
            err(
                i,
                "name",
                f"duplicate stage name: stages[{seen_names[sc.name]}] is also named "
                f"{sc.name!r}; stage names must be unique",
            )
            continue
        seen_names[sc.name] = i
        try:
            processor = registry.get("stages", sc.uses)
        except PluginError as exc:
            err(i, "uses", str(exc))
            continue
        params, param_errors = _config.check_params(
            getattr(processor, "Params", None), sc.params, data, i, paths.file_path
        )
        if param_errors:
            errors.extend(param_errors)
            continue
        for field, given in (("inputs", sc.inputs), ("outputs", sc.outputs)):
            if "" in given:
                err(i, field, "an empty path")
        ins = [path_key(paths.root_path, p) for p in sc.inputs if p]
        outs = [path_key(paths.root_path, p) for p in sc.outputs if p]
        for key in _config.repeated(k for k, _ in outs):
            err(i, "outputs", f"{key!r} is listed twice")
        outs = list({k: (k, p) for k, p in outs}.values())
        for key, path in outs:
            problem = paths.output_problem(key, path)
            if problem:
                err(i, "outputs", problem)
            if key in {k for k, _ in ins}:
                err(i, "outputs", f"{key!r} is both an input and an output of this stage")
            twin = key[:-1] if is_folder(key) else key + "/"  # one path, as a file and a folder
            if key in producers or twin in producers:
                j, other = producers.get(key) or producers[twin]
                err(
                    i,
                    "outputs",
                    f"{key!r} is also written by stage {other!r} (stages[{j}]); "
                    "each output must have one writer",
                )
            else:
                producers[key] = (i, sc.name)
        kind_error = _check_arity(processor, len(sc.inputs), len(sc.outputs))
        kind_error = kind_error or _check_record_paths(processor, ins, outs)
        if kind_error:
            err(i, kind_error[0], kind_error[1])
        planned[sc.name] = PlannedStage(
            config=sc,
            index=i,
            processor=processor,
            params=params,
            params_canonical=_json.canonical(_config.unstructure_params(params)),
            inputs=[k for k, _ in ins],
            outputs=[k for k, _ in outs],
            input_files=[str(p) for _, p in ins],
            output_files=[str(p) for _, p in outs],
            code=registry.code_digest(sc.uses),
        )
    return planned, producers


def _link_stages(
    planned: dict[str, PlannedStage],
    producers: dict[str, tuple[int, str]],
    names: list[str],
    paths: PathRules,
    check_inputs: bool,
    err: Report,
) -> None:
    """Each stage's dependencies (the producers of its inputs, its ``after``),
    and the checks that need every stage: outputs inside another's, inputs
    nothing produces."""
    for st in planned.values():
        for key in st.outputs:
            problem = inside_another_output(key, producers)
            if problem:
                err(st.index, "outputs", problem)
        deps: list[str] = []
        for key, path in zip(st.inputs, st.input_paths):
            made_by = producers_of(key, producers)
            for _index, producer in made_by:
                if producer != st.name and producer not in deps:
                    deps.append(producer)
            if not made_by and check_inputs:
                problem = paths.input_problem(key, path)
                if problem:
                    err(st.index, "inputs", problem)
        for name in st.config.after:
            if name not in names:
                err(st.index, "after", _unknown_stage(name, list(dict.fromkeys(names))))
            elif name == st.name:
                err(st.index, "after", "a stage cannot run after itself")
            elif name in planned and name not in deps:
                deps.append(name)
        st.deps = deps


def _unknown_stage(name: str, known: list[str]) -> str:
    import difflib

    msg = f"unknown stage {name!r}"
    close = difflib.get_close_matches(name, known, n=1)
    if close:
        msg += f" (did you mean {close[0]!r}?)"
    return msg + "; stages: " + ", ".join(known)


def _check_arity(processor: Any, n_in: int, n_out: int) -> tuple[str, str] | None:
    from ..plugins._processors import RecordStage

    if isinstance(processor, RecordStage):
        if n_out != 1:
            return (
                "outputs",
                f"record stage {processor.name!r} needs exactly one output, got {n_out}",
            )
        if n_in < 1:
            return ("inputs", f"record stage {processor.name!r} needs at least one input")
    check = getattr(processor, "check_arity", None)
    if check is not None:
        msg = check(n_in, n_out)
        if msg:
            return ("outputs" if "output" in msg else "inputs", msg)
    return None


def _check_record_paths(
    processor: Any, ins: list[tuple[str, Path]], outs: list[tuple[str, Path]]
) -> tuple[str, str] | None:
    """A record stage reads files and writes one file: no folder or glob."""
    from ..plugins._processors import RecordStage

    if not isinstance(processor, RecordStage):
        return None
    for field, keys in (("inputs", [k for k, _ in ins]), ("outputs", [k for k, _ in outs])):
        for key in keys:
            if is_folder(key) or is_glob(key):
                what = "a folder" if is_folder(key) else "a glob"
                return (
                    field,
                    f"{key!r} is {what}; record stage {processor.name!r} reads and writes files",
                )
    return None


def _toposort(stages: dict[str, PlannedStage], file: Path) -> list[str]:
    """Declared order, constrained by dependencies; a cycle is a config error
    naming the stages in it and why each needs the one before."""
    state: dict[str, int] = {}
    order: list[str] = []
    for start in sorted(stages, key=lambda n: stages[n].index):
        if state.get(start):
            continue
        stack: list[tuple[str, int]] = [(start, 0)]
        path: list[str] = []
        while stack:
            name, i = stack.pop()
            if i == 0:
                if state.get(name) == 2:
                    continue
                state[name] = 1
                path.append(name)
            deps = stages[name].deps
            if i < len(deps):
                stack.append((name, i + 1))
                dep = deps[i]
                s = state.get(dep)
                if s == 1:
                    raise ConfigError(_cycle_message(stages, path[path.index(dep) :], file))
                if s is None:
                    stack.append((dep, 0))
            else:
                state[name] = 2
                path.pop()
                order.append(name)
    return order


def _cycle_message(stages: dict[str, PlannedStage], cycle: list[str], file: Path) -> str:
    """``cycle`` lists stages each of which depends on the next (the last on
    the first). Reported on the cycle's first stage in the file, in run order:
    ``a -> b`` means b needs a."""
    flow = list(reversed(cycle))  # each needs the one before it
    first = min(range(len(flow)), key=lambda k: stages[flow[k]].index)
    flow = flow[first:] + flow[:first]
    why: list[str] = []
    fields: list[str] = []
    for k, name in enumerate(flow):
        before = stages[flow[k - 1]]
        st = stages[name]
        shared = [key for key in st.inputs if key in before.outputs]
        if shared:
            why.append(f"{name!r} reads {shared[0]!r} from {before.name!r}")
            fields.append("inputs")
        else:
            why.append(f"{name!r} runs after {before.name!r}")
            fields.append("after")
    why = why[1:] + why[:1]  # in chain order: the edge into flow[0] closes it
    head = stages[flow[0]]
    chain = " -> ".join([*flow, flow[0]])
    return (
        f"{file}: stage {head.name!r} (stages[{head.index}]), field {fields[0]!r}: "
        f"dependency cycle {chain} ({'; '.join(why)})"
    )
