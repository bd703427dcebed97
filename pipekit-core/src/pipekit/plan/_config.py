"""The pipeline file (**contract** schema): models, loading and validation.

TOML and JSON carry one schema. Structuring goes through cattrs with
``forbid_extra_keys`` so that a typo is an error, and every error is reported
as one line naming the file, the stage and the field, before anything runs.
"""

from __future__ import annotations

import functools
import math
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import attrs

from .. import _structuring
from .._allow_list import check_allow_list
from .._structuring import converter
from ..errors import ConfigError

__all__ = [
    "DEFAULT_FILES",
    "MAX_SECONDS",
    "check_duration",
    "duration_problem",
    "RetryPolicy",
    "RecordRetryPolicy",
    "CheckpointPolicy",
    "FailureLimit",
    "failure_limit",
    "BackendConfig",
    "NetworkConfig",
    "StageNetworkConfig",
    "StageConfig",
    "PipelineConfig",
    "find_pipeline_file",
    "read_pipeline_file",
    "read_pipeline_bytes",
    "parse_pipeline_bytes",
    "structure_pipeline",
    "structure_pipeline_lenient",
    "structure_params",
    "unstructure_params",
    "structure_valid",
    "check_params",
    "join_lines",
    "converter",
]

DEFAULT_FILES = ("pipekit.toml", "pipeline.toml", "pipeline.json")
NAME_RE = re.compile(r"^[A-Za-z0-9_-]+$")


def _num(value: Any) -> str:
    """A number as the user wrote it: ``-1``, not the ``-1.0`` it became."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    return repr(value)


MAX_SECONDS = 1_000_000_000
"""The longest duration a pipeline may set (about 31 years): anything
longer overflows a timestamp or a timed wait somewhere."""


def duration_problem(value: float, *, zero_allowed: bool) -> str | None:
    """Why ``value`` cannot be a number of seconds, or None if it can."""
    if not math.isfinite(value):
        return f"must be a finite number of seconds, got {_num(value)}"
    if zero_allowed and value < 0:
        return f"must be 0 or more, got {_num(value)}"
    if not zero_allowed and value <= 0:
        return f"must be greater than 0, got {_num(value)}"
    if value > MAX_SECONDS:
        return f"must be at most {MAX_SECONDS} seconds (about 31 years), got {_num(value)}"
    return None


def check_duration(name: str, value: float, *, zero_allowed: bool = True) -> None:
    """A :class:`ConfigError` naming ``name`` (e.g. ``--lock-timeout``) if
    ``value`` cannot be a number of seconds."""
    problem = duration_problem(value, zero_allowed=zero_allowed)
    if problem:
        raise ConfigError(f"{name}: {problem}")


def _duration(zero_allowed: bool, _inst: Any, attr: attrs.Attribute[Any], value: Any) -> None:
    """An attrs validator of a number of seconds (None: no limit)."""
    problem = value is not None and duration_problem(value, zero_allowed=zero_allowed)
    if problem:
        raise ValueError(problem)


_seconds = functools.partial(_duration, False)
_seconds_or_zero = functools.partial(_duration, True)


def _positive(_inst: Any, attr: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and value <= 0:
        raise ValueError(f"must be greater than 0, got {_num(value)}")


def _stage_name(_inst: Any, attr: attrs.Attribute[Any], value: str) -> None:
    if not NAME_RE.match(value):
        raise ValueError(f"{value!r} is not a valid stage name (letters, digits, '-', '_')")


@attrs.frozen
class RetryPolicy:
    """How often an attempt is tried, and how long to wait between tries.

    The wait before try ``n+1`` is ``min(max_backoff, backoff * 2**(n-1))``
    plus a random ``0..jitter`` seconds.
    """

    attempts: int = attrs.field(default=1, validator=_positive)
    backoff: float = attrs.field(default=0.5, validator=_seconds_or_zero)
    max_backoff: float = attrs.field(default=30.0, validator=_seconds_or_zero)
    jitter: float = attrs.field(default=0.1, validator=_seconds_or_zero)


@attrs.frozen
class RecordRetryPolicy:
    """How often a record stage tries one record before dead-lettering it:
    a :class:`RetryPolicy` with defaults sized for records (a few quick
    tries) rather than for whole attempts."""

    attempts: int = attrs.field(default=3, validator=_positive)
    backoff: float = attrs.field(default=0.1, validator=_seconds_or_zero)
    max_backoff: float = attrs.field(default=2.0, validator=_seconds_or_zero)
    jitter: float = attrs.field(default=0.05, validator=_seconds_or_zero)


_PERCENT_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*%\s*$")


@attrs.frozen
class FailureLimit:
    """``max_failures`` as a rule: at most ``count`` dead letters, or at most
    ``fraction`` of the records read (``count`` None)."""

    count: int | None
    fraction: float | None

    def exceeded(self, dead: int, records: int) -> bool:
        if self.count is not None:
            return dead > self.count
        assert self.fraction is not None
        return dead > 0 and dead > self.fraction * records

    def describe(self) -> str:
        if self.count is not None:
            return f"max_failures = {self.count}"
        assert self.fraction is not None
        return f"max_failures = {self.fraction * 100:g}% of the records read"


def failure_limit(value: int | float | str) -> FailureLimit:
    """Parse ``max_failures``: an integer count, a fraction below 1, or a
    string percentage such as ``"5%"``; ValueError when it is none of them."""
    if isinstance(value, bool):
        raise ValueError(f"expected a count, a fraction or a percentage, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"a count must be 0 or more, got {value}")
        return FailureLimit(value, None)
    if isinstance(value, float):
        if not 0.0 <= value < 1.0:
            raise ValueError(
                f"a fraction must be at least 0 and below 1, got {_num(value)} "
                '(write a count as an integer, e.g. 5, or a percentage as "5%")'
            )
        return FailureLimit(None, value)
    m = _PERCENT_RE.match(value)
    if not m:
        raise ValueError(
            f"expected a count (e.g. 10), a fraction (e.g. 0.01) or a percentage "
            f'(e.g. "1%"), got {value!r}'
        )
    pct = float(m.group(1))
    if pct > 100:
        raise ValueError(f"a percentage must be 100% or less, got {value!r}")
    return FailureLimit(None, pct / 100.0)


def _max_failures(_inst: Any, attr: attrs.Attribute[Any], value: Any) -> None:
    failure_limit(value)


@attrs.frozen
class CheckpointPolicy:
    """When a record stage checkpoints: every N records or S seconds."""

    every_records: int = attrs.field(default=1000, validator=_positive)
    every_seconds: float = attrs.field(default=60.0, validator=_seconds)


@attrs.frozen
class BackendConfig:
    """Which backend holds locks, idempotency records and checkpoints."""

    name: str = "file"
    options: dict[str, Any] = attrs.field(factory=dict)


def _allow_list(_inst: Any, attr: attrs.Attribute[Any], value: list[str]) -> None:
    problems = check_allow_list(value)
    if problems:
        raise ValueError("; ".join(problems))


ISOLATION_MODES = ("auto", "required", "strict", "off")


def _isolation(_inst: Any, attr: attrs.Attribute[Any], value: str | None) -> None:
    if value is not None and value not in ISOLATION_MODES:
        raise ValueError(
            f"expected one of {', '.join(repr(m) for m in ISOLATION_MODES)}, got {value!r}"
        )


@attrs.frozen
class NetworkConfig:
    """The pipeline's ``[network]`` table: what its stages may reach."""

    allow: list[str] = attrs.field(factory=lambda: ["loopback"], validator=_allow_list)
    isolation: str = attrs.field(default="auto", validator=_isolation)


@attrs.frozen
class StageNetworkConfig:
    """A stage's ``network`` table: what it may reach besides the pipeline's list."""

    allow: list[str] = attrs.field(factory=list, validator=_allow_list)
    isolation: str | None = attrs.field(default=None, validator=_isolation)


@attrs.frozen
class StageConfig:
    """One ``[[stages]]`` table."""

    name: str = attrs.field(validator=_stage_name)
    uses: str
    inputs: list[str] = attrs.field(factory=list)
    outputs: list[str] = attrs.field(factory=list)
    params: dict[str, Any] = attrs.field(factory=dict)
    after: list[str] = attrs.field(factory=list)
    retry: RetryPolicy = attrs.field(factory=RetryPolicy)
    timeout: float | None = attrs.field(default=None, validator=_seconds)
    checkpoint: CheckpointPolicy = attrs.field(factory=CheckpointPolicy)
    allow_network: bool = False
    network: StageNetworkConfig = attrs.field(factory=StageNetworkConfig)
    record_retry: RecordRetryPolicy = attrs.field(factory=RecordRetryPolicy)
    max_failures: int | float | str = attrs.field(default=0, validator=_max_failures)


@attrs.frozen
class PipelineConfig:
    """The whole pipeline file."""

    stages: list[StageConfig]
    name: str | None = None
    state_dir: str = ".pipekit"
    backend: BackendConfig = attrs.field(factory=BackendConfig)
    network: NetworkConfig = attrs.field(factory=NetworkConfig)


def find_pipeline_file(cwd: Path | None = None) -> Path:
    cwd = cwd or Path.cwd()
    for name in DEFAULT_FILES:
        candidate = cwd / name
        if candidate.is_file():
            return candidate
    raise ConfigError(
        f"no pipeline file in {cwd}: looked for {', '.join(DEFAULT_FILES)}; name one with -f FILE"
    )


def read_pipeline_file(path: Path) -> dict[str, Any]:
    """Parse a TOML or JSON pipeline file into plain data."""
    return parse_pipeline_bytes(path, read_pipeline_bytes(path))


def read_pipeline_bytes(path: Path) -> bytes:
    """The bytes of a pipeline file, or a :class:`ConfigError` that says why not."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such pipeline file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, not a pipeline file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None


def parse_pipeline_bytes(path: Path, raw: bytes) -> dict[str, Any]:
    """Parse the bytes of a TOML or JSON pipeline file (``path`` says which,
    and names it in errors) into plain data."""
    if path.suffix == ".json":
        data = _parse_json(path, raw)
    else:
        import tomli  # tomllib's code, compiled: 2.4x faster on a large pipeline file

        try:
            text = raw.decode("utf-8")
            data = tomli.loads(text)
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path}: not UTF-8 text: {exc}") from None
        except tomli.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        except RecursionError:
            raise ConfigError(_toml_too_deep(path, text)) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a table/object")
    return data


def _parse_json(path: Path, raw: bytes) -> Any:
    """Parse a JSON pipeline; a key given twice in one object is an error
    (a parser would keep the last silently), as are NaN and Infinity."""
    import json

    twice: list[tuple[str, dict[str, Any]]] = []  # (the key, its table)

    def table(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        made = dict(pairs)
        if len(made) != len(pairs):
            twice.append((repeated(k for k, _ in pairs)[0], made))
        return made

    def constant(name: str) -> Any:
        raise ValueError(f"{name} is not a JSON number")

    try:
        data = json.loads(raw, object_pairs_hook=table, parse_constant=constant)
    except RecursionError:
        raise ConfigError(f"{path}: not valid JSON: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, bad UTF-8, a constant
        raise ConfigError(f"{path}: not valid JSON: {exc}") from None
    if twice:
        key, table_given_twice = twice[0]
        where = f"{_path_of(data, table_given_twice) or '$'}.{key}"
        raise ConfigError(f"{path}: {_locate(where, data)[1]}: given twice")
    return data


def repeated(keys: Iterable[str]) -> list[str]:
    """The keys given more than once, each once, in order."""
    seen: set[str] = set()
    twice: list[str] = []
    for key in keys:
        if key in seen and key not in twice:
            twice.append(key)
        seen.add(key)
    return twice


def _path_of(data: Any, target: Any) -> str | None:
    """The ``$.stages[1].retry`` path of the object ``target`` in ``data``."""
    todo: list[tuple[Any, str]] = [(data, "$")]
    while todo:
        value, where = todo.pop()
        if value is target:
            return where
        if isinstance(value, dict):
            todo.extend((v, f"{where}.{k}") for k, v in value.items())
        elif isinstance(value, list):
            todo.extend((v, f"{where}[{i}]") for i, v in enumerate(value))
    return None


_TOML_NESTING = 400  # tomli's own limit
_TOML_HEADER = re.compile(r"^\s*\[(\[)?\s*([^\]]*?)\s*\]")
_TOML_KEY = re.compile(r"^\s*([A-Za-z0-9_.\"'-]+?)\s*=")
_TOML_NAME = re.compile(r"^\s*name\s*=\s*[\"']([^\"']*)[\"']")


def _toml_too_deep(path: Path, text: str) -> str:
    """The message for TOML nested beyond the parser's limit, naming the
    line and, where the lines show them, the stage and the field."""
    what = f"not valid TOML: arrays or tables nested more than {_TOML_NESTING} levels deep"
    number = _line_too_deep(text)
    lines = text.split("\n")
    key = _TOML_KEY.match(lines[number - 1])
    field = key.group(1) if key else ""
    section, stage, name = "", -1, None
    for line in lines[: number - 1]:
        header = _TOML_HEADER.match(line)
        if header:
            section = header.group(2)
            if header.group(1) and section == "stages":
                stage, name = stage + 1, None
        elif section == "stages" and _TOML_NAME.match(line):
            name = _TOML_NAME.match(line).group(1)  # type: ignore[union-attr]
    if stage >= 0 and (section == "stages" or section.startswith("stages.")):
        field = ".".join(p for p in (section[len("stages.") :], field) if p)
        where = place(stage, name, field)
    else:
        where = place(-1, None, ".".join(p for p in (section, field) if p))
    return f"{path}: {where}: {what} (at line {number})"


def _line_too_deep(text: str) -> int:
    """The line at which the parser first nests too deeply: the fewest lines
    of ``text`` whose parse raises RecursionError (found by bisection; the
    full text does)."""
    import tomli

    lines = text.split("\n")
    low, high = 1, len(lines)
    while low < high:
        middle = (low + high) // 2
        try:
            tomli.loads("\n".join(lines[:middle]))
        except RecursionError:
            high = middle
            continue
        except tomli.TOMLDecodeError:
            pass
        low = middle + 1
    return high


def _locate(path: str, data: dict[str, Any]) -> tuple[int, str]:
    """Turn a path like ``$.stages[1].retry.attempts`` into (1, ``stage
    'upper' (stages[1]), field 'retry.attempts'``); the index is -1 outside
    a stage."""
    m = re.match(r"^\$\.stages\[(\d+)\](?:\.(.*))?$", path)
    if m:
        index = int(m.group(1))
        name = None
        stages = data.get("stages")
        if isinstance(stages, list) and index < len(stages) and isinstance(stages[index], dict):
            name = stages[index].get("name")
        return index, place(index, name, m.group(2) or "")
    field = path[2:] if path.startswith("$.") else path
    return -1, place(-1, None, "" if field == "$" else field)


def place(index: int, name: Any, field: str) -> str:
    """Where a problem is, for messages: ``stage 'upper' (stages[1]), field
    'retry.attempts'``; ``field 'x'`` or ``top level`` outside a stage (-1)."""
    if index < 0:
        return f"field {field!r}" if field else "top level"
    label = f"stage {name!r} (stages[{index}])" if isinstance(name, str) else f"stages[{index}]"
    return f"{label}, field {field!r}" if field else label


def _lines(
    problems: list[tuple[str, str]], data: dict[str, Any], file: Path
) -> list[tuple[int, str]]:
    out = []
    for path, msg in problems:
        index, where = _locate(path, data)
        out.append((index, f"{file}: {where}: {msg}"))
    return out


def structure_pipeline_lenient(
    data: dict[str, Any], file: Path
) -> tuple[PipelineConfig, list[tuple[int, str]]]:
    """Structure plain data into a :class:`PipelineConfig`.

    A wrong type or an unknown field raises :class:`ConfigError` at once, one
    line per problem. A value that a validator refuses (a negative timeout, a
    bad stage name) is returned as ``(stage index or -1, line)`` with the
    config, so that the caller can go on checking and report everything in
    one go.
    """
    if "stages" not in data:
        raise ConfigError(f"{file}: no stages: add at least one [[stages]] table")
    cfg, problems = _structuring.structure(data, PipelineConfig, "$")
    if cfg is None:
        problems += _structuring.validate_raw(PipelineConfig, data, "$")
        raise ConfigError(join_lines(_lines(problems, data, file)))
    return cfg, _lines(problems, data, file)


def structure_pipeline(data: dict[str, Any], file: Path) -> PipelineConfig:
    """Structure plain data into a :class:`PipelineConfig`, or raise a
    :class:`ConfigError` with one line per problem."""
    cfg, lines = structure_pipeline_lenient(data, file)
    if lines:
        raise ConfigError(join_lines(lines))
    return cfg


def join_lines(lines: list[tuple[int, str]]) -> str:
    """One message from (stage index, line) pairs: file order, top level first."""
    return "\n".join(line for _, line in sorted(lines, key=lambda item: item[0]))


def check_params(
    params_cls: type | None, raw: dict[str, Any], data: dict[str, Any], index: int, file: Path
) -> tuple[Any, list[tuple[int, str]]]:
    """Structure and validate stage ``index``'s ``params`` table:
    (params, []) or (None, lines naming each bad field)."""
    params, problems = _params(params_cls, raw, f"$.stages[{index}].params")
    return params, _lines(problems, data, file)


def _params(params_cls: type | None, raw: dict[str, Any], prefix: str) -> tuple[Any, Any]:
    """(params, []) or (None, [(path, problem), ...])."""
    if params_cls is None:
        names = ", ".join(repr(k) for k in sorted(raw))
        return None, [(prefix, f"this processor takes no params; remove {names}")] if raw else []
    params, problems = _structuring.structure(raw, params_cls, prefix)
    return (None if problems else params), problems


def structure_valid(value: Any, cls: type) -> Any:
    """``value`` as ``cls``, for a value known to fit (a cached plan's stage
    table): :class:`ConfigError` if it no longer does."""
    inst, problems = _structuring.structure(value, cls, "$")
    if inst is None or problems:
        raise ConfigError("; ".join(f"{p}: {m}" for p, m in problems) or "does not fit")
    return inst


def unstructure_params(params: Any) -> Any:
    """Plain data of a params instance (None for none), as the converter
    unstructures it: what a stage's canonical params are made of."""
    if params is None:
        return None
    return converter().unstructure(params)


def structure_params(params_cls: type | None, raw: dict[str, Any]) -> Any:
    """Structure a ``params`` table; raise :class:`ConfigError` (one line per
    problem, paths relative to the table) if it does not fit."""
    params, problems = _params(params_cls, raw, "$")
    if problems:
        raise ConfigError(
            "\n".join(
                f"params, field {p[2:]!r}: {m}" if p.startswith("$.") else f"params: {m}"
                for p, m in problems
            )
        )
    return params


def relpath_key(root: Path, p: str) -> tuple[str, Path]:
    """(key, absolute path) of a pipeline-relative path. The key is the
    normalized POSIX path relative to the pipeline's folder, so that
    fingerprints are the same on every machine."""
    base = os.fspath(root)
    absolute = os.path.normpath(os.path.join(base, p))
    if absolute.startswith(base.rstrip(os.sep) + os.sep):
        key = absolute[len(base.rstrip(os.sep)) + 1 :]
    elif absolute == base:
        key = "."
    else:
        key = absolute
    if os.sep != "/":
        key = key.replace(os.sep, "/")
    return key, Path(absolute)
