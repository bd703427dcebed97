"""The Python API: run a pipeline, or ask what would run, from a program,
a notebook or a thread (docs/python-api.md).

What ``pipekit run`` does, without its command line: no ``sys.exit``, no
signal handlers (the caller's stay as they are), no output; errors are the
documented exceptions (:class:`pipekit.ConfigError`, ...). A run's outcome
holds the facts ``pipekit run --json`` prints.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from .engine._plan_view import StageStatus, statuses
from .engine._runner import Runner, RunOutcome
from .engine._services import RunOptions
from .plan._pipeline import Pipeline
from .plan._targets import matching, select

__all__ = ["run", "status"]

PipelineLike = Pipeline | str | os.PathLike[str]


def run(
    pipeline: PipelineLike,
    targets: Iterable[str] = (),
    *,
    jobs: int = 1,
    force: Iterable[str] = (),
    keep_going: bool = False,
    dry_run: bool = False,
) -> RunOutcome | list[StageStatus]:
    """Make ``pipeline`` (a :class:`pipekit.Pipeline` or a pipeline file's
    path) up to date: its ``targets`` (names or glob patterns) and what
    they need, or every stage. ``force``: stages to run even when up to
    date (patterns, or ``"all"``). With ``dry_run``, nothing runs: what
    :func:`status` returns."""
    chosen = _targets_of(_pipeline_of(pipeline), targets)
    forced, force_all = _forced(chosen, force)
    if dry_run:
        return statuses(chosen, forced=lambda name: force_all or name in forced)
    if jobs < 1:
        from .errors import ConfigError

        raise ConfigError("jobs must be 1 or more")
    options = RunOptions(jobs=jobs, force=forced, force_all=force_all, keep_going=keep_going)
    return Runner(chosen, chosen.registry.get(), options).run()


def status(
    pipeline: PipelineLike, targets: Iterable[str] = (), *, force: Iterable[str] = ()
) -> list[StageStatus]:
    """Each stage (of ``targets`` and what they need, or every one): up to
    date or will run, and why; nothing runs, nothing is written."""
    chosen = _targets_of(_pipeline_of(pipeline), targets)
    forced, force_all = _forced(chosen, force)
    return statuses(chosen, forced=lambda name: force_all or name in forced)


def _pipeline_of(pipeline: PipelineLike) -> Pipeline:
    return pipeline if isinstance(pipeline, Pipeline) else Pipeline.load(Path(pipeline))


def _targets_of(pipeline: Pipeline, targets: Iterable[str]) -> Pipeline:
    if isinstance(targets, str):  # run(p, "train"): one target, not its letters
        targets = [targets]
    return select(pipeline, list(targets))


def _forced(pipeline: Pipeline, force: Iterable[str]) -> tuple[frozenset[str], bool]:
    patterns = {force} if isinstance(force, str) else set(force)
    every = "all" in patterns
    patterns.discard("all")
    return frozenset(matching("force", sorted(patterns), pipeline.order)), every
