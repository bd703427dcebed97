"""A loaded, validated pipeline: stages bound to processors, in DAG order."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import attrs

from . import config as _config
from .errors import ConfigError, PluginError

__all__ = ["PlannedStage", "Pipeline", "load_pipeline"]


@attrs.define(eq=False)
class PlannedStage:
    config: _config.StageConfig
    index: int
    processor: Any
    params: Any
    params_canonical: bytes
    inputs: list[str]
    outputs: list[str]
    input_paths: list[Path]
    output_paths: list[Path]
    deps: list[str] = attrs.field(factory=list)

    @property
    def name(self) -> str:
        return self.config.name


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


def load_pipeline(
    file: Path, registry: Any, *, backend_override: str | None = None, check_inputs: bool = True
) -> Pipeline:
    """Read, structure and validate a pipeline file; every problem found is
    reported at once (one line each), and nothing has run."""
    from . import _json

    file = file.resolve()
    data = _config.read_pipeline_file(file)
    cfg = _config.structure_pipeline(data, file)
    root = file.parent
    errors: list[str] = []

    def err(index: int | None, field: str, msg: str) -> None:
        if index is None:
            errors.append(f"{file}: field {field!r}: {msg}")
        else:
            name = cfg.stages[index].name
            errors.append(f"{file}: stage {name!r} (stages[{index}]), field {field!r}: {msg}")

    if not cfg.stages:
        raise ConfigError(f"{file}: no stages: add at least one [[stages]] table")

    backend = cfg.backend
    if backend_override:
        backend = attrs.evolve(backend, name=backend_override)
    names = registry.backend_names()
    if backend.name not in names:
        from .plugins import unknown_name_message

        where = "--backend" if backend_override else f"{file}: field 'backend.name'"
        raise ConfigError(
            unknown_name_message("backend", backend.name, dict.fromkeys(names), where)
        )

    seen_names: dict[str, int] = {}
    producers: dict[str, tuple[int, str]] = {}
    planned: dict[str, PlannedStage] = {}
    for i, sc in enumerate(cfg.stages):
        if sc.name in seen_names:
            err(i, "name", f"duplicate stage name (also stages[{seen_names[sc.name]}])")
            continue
        seen_names[sc.name] = i
        try:
            processor = registry.get("stages", sc.uses)
        except PluginError as exc:
            err(i, "uses", str(exc))
            continue
        try:
            params = _config.structure_params(getattr(processor, "Params", None), sc.params)
        except Exception as exc:
            errors.extend(f"{file}: {line}" for line in _config.params_error_lines(exc, data, i))
            continue
        canon = _json.canonical(
            _config.converter().unstructure(params) if params is not None else None
        )
        ins = [_config.relpath_key(root, p) for p in sc.inputs]
        outs = [_config.relpath_key(root, p) for p in sc.outputs]
        if len({k for k, _ in outs}) != len(outs):
            err(i, "outputs", "the same output is listed twice")
        for key, _ in outs:
            if key in {k for k, _ in ins}:
                err(i, "outputs", f"{key!r} is both an input and an output of this stage")
            if key in producers:
                j, other = producers[key]
                err(i, "outputs", f"{key!r} is also written by stage {other!r} (stages[{j}])")
            else:
                producers[key] = (i, sc.name)
        kind_error = _check_arity(processor, len(ins), len(outs))
        if kind_error:
            err(i, kind_error[0], kind_error[1])
        planned[sc.name] = PlannedStage(
            config=sc,
            index=i,
            processor=processor,
            params=params,
            params_canonical=canon,
            inputs=[k for k, _ in ins],
            outputs=[k for k, _ in outs],
            input_paths=[p for _, p in ins],
            output_paths=[p for _, p in outs],
        )

    for st in planned.values():
        deps: list[str] = []
        for key, path in zip(st.inputs, st.input_paths):
            prod = producers.get(key)
            if prod is not None:
                if prod[1] != st.name and prod[1] not in deps:
                    deps.append(prod[1])
            elif check_inputs and not os.path.exists(path):
                err(st.index, "inputs", f"{key!r} does not exist and no stage produces it")
        for name in st.config.after:
            if name not in planned and name not in seen_names:
                err(st.index, "after", f"unknown stage {name!r}")
            elif name == st.name:
                err(st.index, "after", "a stage cannot run after itself")
            elif name in planned and name not in deps:
                deps.append(name)
        st.deps = deps

    if errors:
        raise ConfigError("\n".join(errors))

    order = _toposort(planned, file)
    state_dir = Path(os.path.normpath(root / cfg.state_dir))
    return Pipeline(
        file=file,
        root=root,
        name=cfg.name or root.name,
        state_dir=state_dir,
        backend=backend,
        stages=planned,
        order=order,
        raw=data,
    )


def _check_arity(processor: Any, n_in: int, n_out: int) -> tuple[str, str] | None:
    from .stage import RecordStage

    if isinstance(processor, RecordStage):
        if n_out != 1:
            return ("outputs", f"record stage {processor.name!r} needs exactly one output, got {n_out}")
        if n_in < 1:
            return ("inputs", f"record stage {processor.name!r} needs at least one input")
    check = getattr(processor, "check_arity", None)
    if check is not None:
        msg = check(n_in, n_out)
        if msg:
            return ("outputs" if "output" in msg else "inputs", msg)
    return None


def _toposort(stages: dict[str, PlannedStage], file: Path) -> list[str]:
    """Declared order, constrained by dependencies; a cycle is a config error
    naming the stages in it."""
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
                    cycle = path[path.index(dep):] + [dep]
                    st = stages[dep]
                    raise ConfigError(
                        f"{file}: stage {dep!r} (stages[{st.index}]), field 'inputs': "
                        f"dependency cycle: {' -> '.join(reversed(cycle))}"
                    )
                if s is None:
                    stack.append((dep, 0))
            else:
                state[name] = 2
                path.pop()
                order.append(name)
    return order
