"""The pipeline file (**contract** schema): models, loading and validation.

TOML and JSON carry one schema. Structuring goes through cattrs with
``forbid_extra_keys`` so that a typo is an error, and every error is reported
as one line naming the file, the stage and the field, before anything runs.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import attrs

from .errors import ConfigError

__all__ = [
    "DEFAULT_FILES",
    "RetryPolicy",
    "CheckpointPolicy",
    "BackendConfig",
    "StageConfig",
    "PipelineConfig",
    "find_pipeline_file",
    "read_pipeline_file",
    "structure_pipeline",
    "converter",
]

DEFAULT_FILES = ("pipekit.toml", "pipeline.toml", "pipeline.json")
NAME_RE = re.compile(r"^[A-Za-z0-9_-]+$")


def _positive(_inst: Any, attr: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and value <= 0:
        raise ValueError(f"must be greater than 0, got {value!r}")


def _not_negative(_inst: Any, attr: attrs.Attribute[Any], value: Any) -> None:
    if value < 0:
        raise ValueError(f"must be 0 or more, got {value!r}")


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
    backoff: float = attrs.field(default=0.5, validator=_not_negative)
    max_backoff: float = attrs.field(default=30.0, validator=_not_negative)
    jitter: float = attrs.field(default=0.1, validator=_not_negative)


@attrs.frozen
class CheckpointPolicy:
    """When a record stage checkpoints: every N records or S seconds."""

    every_records: int = attrs.field(default=1000, validator=_positive)
    every_seconds: float = attrs.field(default=60.0, validator=_positive)


@attrs.frozen
class BackendConfig:
    """Which backend holds locks, idempotency records and checkpoints."""

    name: str = "file"
    options: dict[str, Any] = attrs.field(factory=dict)


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
    timeout: float | None = attrs.field(default=None, validator=_positive)
    checkpoint: CheckpointPolicy = attrs.field(factory=CheckpointPolicy)


@attrs.frozen
class PipelineConfig:
    """The whole pipeline file."""

    stages: list[StageConfig]
    name: str | None = None
    state_dir: str = ".pipekit"
    backend: BackendConfig = attrs.field(factory=BackendConfig)


def _make_converter() -> Any:
    import cattrs

    conv = cattrs.Converter(forbid_extra_keys=True)

    def _number(value: Any, typ: type) -> Any:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"expected a number, got {type(value).__name__} {value!r}")
        return typ(value)

    def _int(value: Any, _t: type) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"expected an integer, got {type(value).__name__} {value!r}")
        return value

    def _str(value: Any, _t: type) -> str:
        if not isinstance(value, str):
            raise TypeError(f"expected a string, got {type(value).__name__} {value!r}")
        return value

    def _bool(value: Any, _t: type) -> bool:
        if not isinstance(value, bool):
            raise TypeError(f"expected true or false, got {type(value).__name__} {value!r}")
        return value

    conv.register_structure_hook(float, _number)
    conv.register_structure_hook(int, _int)
    conv.register_structure_hook(str, _str)
    conv.register_structure_hook(bool, _bool)
    return conv


_converter: Any = None


def converter() -> Any:
    """The strict cattrs converter used for config and processor params."""
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
        f"no pipeline file in {cwd}: looked for {', '.join(DEFAULT_FILES)}; "
        "name one with -f FILE"
    )


def read_pipeline_file(path: Path) -> dict[str, Any]:
    """Parse a TOML or JSON pipeline file into plain data."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such pipeline file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    if path.suffix == ".json":
        from . import _json

        try:
            data = _json.loads(raw)
        except _json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: not valid JSON: {exc}") from None
    else:
        import tomllib

        try:
            data = tomllib.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path}: not UTF-8 text: {exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a table/object")
    return data


def _where(path: str, data: dict[str, Any]) -> str:
    """Turn a cattrs path like ``$.stages[1].retry.attempts`` into
    ``stage 'upper' (stages[1]), field retry.attempts``."""
    m = re.match(r"^\$\.stages\[(\d+)\](?:\.(.*))?$", path)
    if m:
        index = int(m.group(1))
        field = m.group(2) or ""
        name = None
        stages = data.get("stages")
        if isinstance(stages, list) and index < len(stages) and isinstance(stages[index], dict):
            name = stages[index].get("name")
        label = f"stage {name!r} (stages[{index}])" if isinstance(name, str) else f"stages[{index}]"
        return f"{label}, field {field!r}" if field else label
    field = path[2:] if path.startswith("$.") else path
    return f"field {field!r}" if field and field != "$" else "top level"


def _cattrs_messages(exc: BaseException, data: dict[str, Any], prefix: str = "$") -> list[str]:
    import cattrs

    lines = []
    for message in cattrs.transform_error(exc, path=prefix):
        text, _, path = message.rpartition(" @ ")
        if not text:
            text, path = message, prefix
        extra = re.match(r"extra fields found \((.*)\)", text)
        if extra:
            for field in extra.group(1).split(", "):
                lines.append(f"{_where(path + '.' + field, data)}: unknown field")
            continue
        if text.startswith("required field missing"):
            lines.append(f"{_where(path, data)}: required field missing")
            continue
        lines.append(f"{_where(path, data)}: {text}")
    return lines


def structure_pipeline(data: dict[str, Any], file: Path) -> PipelineConfig:
    """Structure plain data into a :class:`PipelineConfig`, or raise a
    :class:`ConfigError` with one line per problem."""
    import cattrs

    if "stages" not in data:
        raise ConfigError(f"{file}: no stages: add at least one [[stages]] table")
    try:
        return converter().structure(data, PipelineConfig)  # type: ignore[no-any-return]
    except (cattrs.BaseValidationError, ValueError, TypeError) as exc:
        if isinstance(exc, cattrs.BaseValidationError):
            lines = _cattrs_messages(exc, data)
        else:
            lines = [f"top level: {exc}"]
        raise ConfigError("\n".join(f"{file}: {line}" for line in lines)) from None


def structure_params(params_cls: type | None, raw: dict[str, Any]) -> Any:
    """Structure a stage's ``params`` table; raise ``cattrs`` errors as they come."""
    if params_cls is None:
        if raw:
            raise ValueError(
                "this processor takes no params; remove: " + ", ".join(sorted(raw))
            )
        return None
    return converter().structure(raw, params_cls)


def params_error_lines(exc: BaseException, data: dict[str, Any], index: int) -> list[str]:
    import cattrs

    if isinstance(exc, cattrs.BaseValidationError):
        return _cattrs_messages(exc, data, prefix=f"$.stages[{index}].params")
    return [f"{_where(f'$.stages[{index}].params', data)}: {exc}"]


def relpath_key(root: Path, p: str) -> tuple[str, Path]:
    """(key, absolute path) of a pipeline-relative path. The key is the
    normalized POSIX path relative to the pipeline's folder, so that
    fingerprints are the same on every machine."""
    absolute = Path(os.path.normpath(root / p))
    try:
        key = absolute.relative_to(root).as_posix()
    except ValueError:
        key = absolute.as_posix()
    return key, absolute
