"""Targets: the stages a command is about, named or matched by glob
patterns (``train@us-*``), and the part of a plan they need.

``pipekit run TARGET ...`` makes the targets up to date and what they need
upstream, nothing else; with ``--downstream``, the targets and everything
downstream of them. The other stages are not decided at all.
"""

from __future__ import annotations

import copy
import difflib
import fnmatch
from collections.abc import Iterable

import attrs

from ..errors import ConfigError
from ._pipeline import Pipeline

__all__ = ["matching", "select"]

_GLOB = frozenset("*?[")


def matching(option: str, patterns: Iterable[str], names: list[str]) -> set[str]:
    """The names that match each pattern (a name, or a glob); a pattern
    that matches nothing is a :class:`ConfigError` naming the closest."""
    found: set[str] = set()
    known = set(names)
    for pattern in patterns:
        if not _GLOB & set(pattern):
            hits = [pattern] if pattern in known else []
        else:
            hits = fnmatch.filter(names, pattern)
        if not hits:
            close = difflib.get_close_matches(pattern, names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            what = "unknown stage" if not _GLOB & set(pattern) else "no stage matches"
            raise ConfigError(f"{option}: {what} {pattern!r}{hint}; stages: {', '.join(names)}")
        found.update(hits)
    return found


def select(pipeline: Pipeline, patterns: list[str], *, downstream: bool = False) -> Pipeline:
    """The plan of the stages that ``patterns`` need: the matched ones and
    their upstream stages, or (``downstream``) the matched ones and their
    downstream stages, whose edges to stages left out are dropped (those
    are decided by their files, not run). All of ``pipeline`` without patterns."""
    if not patterns:
        return pipeline
    chosen = matching("target", patterns, pipeline.order)
    keep = pipeline.downstream_of(chosen) if downstream else _upstream_of(pipeline, chosen)
    stages = {}
    for name in pipeline.order:
        if name in keep:
            stage = pipeline.stages[name]
            if any(dep not in keep for dep in stage.deps):
                stage = copy.copy(stage)
                stage.deps = [dep for dep in stage.deps if dep in keep]
            stages[name] = stage
    return attrs.evolve(pipeline, stages=stages, order=[n for n in pipeline.order if n in keep])


def _upstream_of(pipeline: Pipeline, names: set[str]) -> set[str]:
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(pipeline.stages[name].deps)
    return seen
