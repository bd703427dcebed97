"""The pipeline file (**contract** schema): models, loading and validation.

TOML and JSON carry one schema. Structuring goes through cattrs with
``forbid_extra_keys`` so that a typo is an error, and every error is reported
as one line naming the file, the stage and the field, before anything runs.
"""

from __future__ import annotations

import difflib
import functools
import itertools
import math
import os
import re
import threading
from collections import abc
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, get_args, get_origin

import attrs

from .errors import ConfigError

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


def _duration(*, zero_allowed: bool) -> Callable[[Any, Any, Any], None]:
    """An attrs validator of a number of seconds (None: no limit)."""

    def check(_inst: Any, attr: attrs.Attribute[Any], value: Any) -> None:
        problem = value is not None and duration_problem(value, zero_allowed=zero_allowed)
        if problem:
            raise ValueError(problem)

    return check


_seconds = _duration(zero_allowed=False)
_seconds_or_zero = _duration(zero_allowed=True)


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
    """How often a record stage tries one record before dead-lettering it.

    The same shape as :class:`RetryPolicy`, with defaults sized for records
    (a few quick tries) rather than for whole attempts: the wait before try
    ``n+1`` is ``min(max_backoff, backoff * 2**(n-1))`` plus ``0..jitter`` s.
    """

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
    from .netguard import check_allow_list

    problems = check_allow_list(value)
    if problems:
        raise ValueError("; ".join(problems))


def _isolation(_inst: Any, attr: attrs.Attribute[Any], value: str | None) -> None:
    from .netguard import ISOLATION_MODES

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


class _Bad(ValueError):
    """A value of the wrong type or shape; its message is shown as it is."""


_KIND = {
    bool: "a boolean",
    int: "an integer",
    float: "a number",
    str: "a string",
    list: "a list",
    dict: "a table",
}


def _describe(value: Any) -> str:
    """``a string 'three'``, ``an integer 1``, ``a list [...]``: for messages."""
    kind = _KIND.get(type(value), f"a {type(value).__name__}")
    text = repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{kind} {text}"


def _number(value: Any, typ: type) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Bad(f"expected a number, got {_describe(value)}")
    try:
        return typ(value)
    except OverflowError:
        raise _Bad(
            f"expected a number, got an integer of {len(str(abs(value)))} digits (too large)"
        ) from None


def _exactly(kind: type, label: str) -> Callable[[Any, Any], Any]:
    """A hook that takes a value of ``kind`` as it is (a bool is no int)."""

    def hook(value: Any, _t: Any) -> Any:
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise _Bad(f"expected {label}, got {_describe(value)}")
        return value

    return hook


def _limit(value: Any, _t: Any) -> int | float | str:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise _Bad(
            "expected a count (integer), a fraction (number below 1) or a "
            f'percentage (string such as "5%"), got {_describe(value)}'
        )
    return value


def _items(conv: Any, t: Any, triples: Iterable[tuple[Any, Any, Any]]) -> list[tuple[Any, Any]]:
    """Structure each (key, value, type); gather errors with their index/key."""
    from cattrs.errors import IterableValidationError, IterableValidationNote

    out: list[tuple[Any, Any]] = []
    errors: list[Exception] = []
    for key, item, typ in triples:
        try:
            out.append((key, conv.structure(item, typ)))
        except Exception as exc:
            exc.__notes__ = [
                *getattr(exc, "__notes__", []),
                IterableValidationNote(f"Structuring {t!r} @ {key!r}", key, typ),
            ]
            errors.append(exc)
    if errors:
        raise IterableValidationError(f"While structuring {t!r}", errors, t)
    return out


def _dict_factory(conv: Any, t: Any) -> Callable[[Any, Any], dict[Any, Any]]:
    args = get_args(t)
    value_type = args[1] if len(args) == 2 else Any

    def hook(value: Any, _t: Any) -> dict[Any, Any]:
        if not isinstance(value, dict):
            raise _Bad(f"expected a table, got {_describe(value)}")
        return dict(_items(conv, t, ((k, v, value_type) for k, v in value.items())))

    return hook


def _attrs_factory(conv: Any, t: Any) -> Callable[[Any, Any], Any]:
    base = conv.gen_structure_attrs_fromdict(t)

    def hook(value: Any, _t: Any) -> Any:
        if not isinstance(value, dict):
            raise _Bad(f"expected a table, got {_describe(value)}")
        return base(value, _t)

    return hook


_MADE_AS: dict[Any, Any] = {
    abc.Sequence: tuple,
    abc.Set: frozenset,
    abc.MutableSet: set,
    abc.MutableSequence: list,
}
_COLLECTIONS = (list, tuple, set, frozenset, *_MADE_AS)


def _collection_factory(conv: Any, t: Any) -> Callable[[Any, Any], Any]:
    """A list field given a string would otherwise become a list of its
    characters: ``inputs = "x.txt"`` must be an error, not ['x', '.', ...].
    Each collection is made as its own type (pinned here: cattrs' defaults
    for abstract ones changed between releases, and canonical params, so
    fingerprints, depend on it); a fixed-length tuple checks its length."""
    origin = get_origin(t) or t
    args = get_args(t)
    make = _MADE_AS.get(origin, origin)
    fixed = origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis)

    def hook(value: Any, _t: Any) -> Any:
        if not isinstance(value, (list, tuple)):
            raise _Bad(f"expected a list, got {_describe(value)}")
        if fixed and len(value) != len(args):
            raise _Bad(f"expected a list of {len(args)} items, got {len(value)}")
        types = args if fixed else itertools.repeat(args[0] if args else Any)
        typed = ((i, v, a) for i, (v, a) in enumerate(zip(value, types)))
        return make(v for _, v in _items(conv, t, typed))

    return hook


def _make_converter() -> Any:
    import cattrs

    conv = cattrs.Converter(forbid_extra_keys=True)
    conv.register_structure_hook(float, _number)
    conv.register_structure_hook(int, _exactly(int, "an integer"))
    conv.register_structure_hook(str, _exactly(str, "a string"))
    conv.register_structure_hook(bool, _exactly(bool, "true or false"))
    conv.register_structure_hook(int | float | str, _limit)
    for kinds, factory in ((_COLLECTIONS, _collection_factory), ((dict,), _dict_factory)):
        conv.register_structure_hook_factory(
            lambda t, kinds=kinds: (get_origin(t) or t) in kinds, functools.partial(factory, conv)
        )
    conv.register_structure_hook_factory(
        lambda t: isinstance(t, type) and attrs.has(t), functools.partial(_attrs_factory, conv)
    )
    return conv


_converter: Any = None
# attrs validators are switched off (process-wide) while structuring, so that
# every validator's error can be reported with its field; the lock keeps two
# loads from switching them back on under each other's feet.
_structure_lock = threading.RLock()


def converter() -> Any:
    """The strict cattrs converter used for config and processor params
    (made once: it makes each class's structuring function once)."""
    global _converter
    if _converter is None:
        _converter = _make_converter()
    return _converter


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


def _walk(
    exc: BaseException, path: str, typ: Any = None
) -> Iterator[tuple[str, BaseException, Any]]:
    """Every leaf error of a cattrs validation error: (path, error, type)."""
    from cattrs.errors import AttributeValidationNote, ClassValidationError, IterableValidationError

    if not isinstance(exc, (ClassValidationError, IterableValidationError)):
        yield path, exc, typ
        return
    noted, others = exc.group_exceptions()
    for sub, note in noted:
        if isinstance(note, AttributeValidationNote):
            where = f"{path}.{note.name}"
        else:
            where = (
                f"{path}.{note.index}" if isinstance(note.index, str) else f"{path}[{note.index}]"
            )
        yield from _walk(sub, where, note.type)
    for sub in others:
        yield from _walk(sub, path)


def _unknown_field(field: str, known: list[str]) -> str:
    close = difflib.get_close_matches(field, known, n=1)
    if close:
        return f"unknown field (did you mean {close[0]!r}?)"
    return "unknown field; known fields: " + (", ".join(known) if known else "none")


def _problem_text(exc: BaseException, typ: Any) -> str:
    if isinstance(exc, _Bad):
        return str(exc)
    if isinstance(exc, KeyError):
        return "required field missing"
    msg = str(exc)
    if typ is not None:
        tn = getattr(typ, "__name__", None) or repr(typ)
        return f"expected {tn}" + (f" ({msg})" if msg else "")
    return msg or type(exc).__name__


def _problems(exc: BaseException, prefix: str) -> list[tuple[str, str]]:
    """(path, message) for every leaf of a structuring error."""
    from cattrs.errors import ForbiddenExtraKeysError

    out: list[tuple[str, str]] = []
    for path, sub, typ in _walk(exc, prefix):
        if isinstance(sub, ForbiddenExtraKeysError):
            cl = getattr(sub, "cl", None)
            known = [a.name for a in attrs.fields(cl)] if cl is not None and attrs.has(cl) else []
            for field in sorted(sub.extra_fields):
                out.append((f"{path}.{field}", _unknown_field(field, known)))
        else:
            out.append((path, _problem_text(sub, typ)))
    return out


def _validate(inst: Any, path: str) -> list[tuple[str, str]]:
    """Run the attrs validators of ``inst`` and of the attrs instances in it,
    one field at a time, so that each failure names its field."""
    out: list[tuple[str, str]] = []
    for a in attrs.fields(type(inst)):
        value = getattr(inst, a.name)
        p = f"{path}.{a.name}"
        if a.validator is not None:
            try:
                a.validator(inst, a, value)
            except Exception as exc:
                out.append((p, str(exc) or type(exc).__name__))
        if attrs.has(type(value)):
            out.extend(_validate(value, p))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if attrs.has(type(item)):
                    out.extend(_validate(item, f"{p}[{i}]"))
    return out


def _validate_raw(cls: type, raw: Any, path: str) -> list[tuple[str, str]]:
    """The validators' problems in a table that did not structure as a whole
    (a field of the wrong type elsewhere): each field that structures on its
    own is validated on its own, so that one run reports every problem.
    Only for pipekit's own config classes, whose validators look at nothing
    but the value."""
    if not isinstance(raw, dict):
        return []
    attrs.resolve_types(cls)
    out: list[tuple[str, str]] = []
    for a in attrs.fields(cls):
        if a.name not in raw:
            continue
        p = f"{path}.{a.name}"
        value = raw[a.name]
        typ = a.type
        if isinstance(typ, type) and attrs.has(typ):
            inst, problems = _structure(value, typ, p)
            out.extend(problems if inst is not None else _validate_raw(typ, value, p))
            continue
        if get_origin(typ) is list and get_args(typ) and attrs.has(get_args(typ)[0]):
            if isinstance(value, list):
                for i, item in enumerate(value):
                    inst, problems = _structure(item, get_args(typ)[0], f"{p}[{i}]")
                    out.extend(
                        problems
                        if inst is not None
                        else _validate_raw(get_args(typ)[0], item, f"{p}[{i}]")
                    )
            continue
        if a.validator is None:
            continue
        try:
            with _structure_lock, attrs.validators.disabled():
                v = converter().structure(value, typ)
        except Exception:
            continue  # reported by the whole structuring
        try:
            a.validator(None, a, v)
        except Exception as exc:
            out.append((p, str(exc) or type(exc).__name__))
    return out


def _structure(value: Any, cls: type, prefix: str) -> tuple[Any, list[tuple[str, str]]]:
    """Structure ``value`` as ``cls``. Returns (instance, problems): the
    instance is None when the value has the wrong shape or types; otherwise
    the problems are the validators' (the instance is still usable for
    further checks)."""
    with _structure_lock:
        import cattrs

        # Structured with the validators on, a value that fits needs no
        # field-by-field walk. Only a value that does not fit is structured
        # again with them off, so that each problem is named by its field.
        try:
            return converter().structure(value, cls), []
        except Exception:
            pass
        try:
            with attrs.validators.disabled():
                inst = converter().structure(value, cls)
        except (cattrs.BaseValidationError, ValueError, TypeError, KeyError) as exc:
            return None, _problems(exc, prefix)
        except Exception as exc:  # e.g. a Params __attrs_post_init__
            return None, [(prefix, f"{type(exc).__name__}: {exc}")]
    return inst, _validate(inst, prefix)


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
    cfg, problems = _structure(data, PipelineConfig, "$")
    if cfg is None:
        problems += _validate_raw(PipelineConfig, data, "$")
        raise ConfigError(join_lines(_lines(problems, data, file)))
    lines = _lines(problems, data, file)
    return cfg, lines


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
    params, problems = _structure(raw, params_cls, prefix)
    return (None if problems else params), problems


def structure_valid(value: Any, cls: type) -> Any:
    """``value`` as ``cls``, for a value known to fit (a cached plan's stage
    table): :class:`ConfigError` if it no longer does."""
    inst, problems = _structure(value, cls, "$")
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
