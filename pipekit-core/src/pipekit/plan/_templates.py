"""Templated stages: ``vars``, ``foreach``, ``matrix`` and ``${...}``.

A pipeline file's plain data goes through :func:`expand` before it is
structured: the top-level ``vars`` (tables, and TOML or JSON files named
relative to the pipeline file; later wins) are read, each stage with
``foreach`` or ``matrix`` becomes one stage per item (``NAME@ITEM``), and
every ``${name}`` in every string of a stage is replaced by its value. A
string that is exactly one ``${x}`` takes the value of ``x`` itself (a
list, a number); ``$${`` is a literal ``${``. What a stage interpolates is
part of its params and paths, so its fingerprint covers exactly the
values it uses. Every problem is a :class:`~pipekit.errors.ConfigError`
naming the file, the stage and the field.
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import re
from pathlib import Path
from typing import Any

from ..errors import ConfigError

__all__ = ["expand", "Expanded"]

_REFERENCE = re.compile(r"\$\$\{|\$\{\s*([A-Za-z_][\w-]*(?:\.[\w-]+)*)\s*\}|\$\{")
"""``$${`` (a literal ``${``), ``${name.key}``, or a ``${`` that starts no reference."""
_SCALARS = (str, int, float, bool)


class Expanded:
    """The data with templates expanded, and the vars files read (path,
    SHA-256 of its bytes): a cached plan is valid while they are unchanged."""

    def __init__(
        self,
        data: dict[str, Any],
        var_files: list[list[str]],
        used: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        self.data = data
        self.var_files = var_files
        self.used = used or {}
        """Stage name -> the variables its strings used, and their values."""


def expand(data: dict[str, Any], file: Path) -> Expanded:
    """``data`` with every templated stage expanded. A file with no ``vars``
    and no stage with ``foreach`` or ``matrix`` is left as written (a
    ``${HOME}`` in a shell command stays the shell's); in one that has
    them, ``$${`` is a literal ``${``."""
    stages = data.get("stages")
    templated = isinstance(stages, list) and any(
        isinstance(s, dict) and ("foreach" in s or "matrix" in s) for s in stages
    )
    if "vars" not in data and not templated:
        return Expanded(data, [])  # as written: a shell command's ${HOME} stays the shell's
    values, var_files = _read_vars(data.get("vars", {}), file)
    out = {k: v for k, v in data.items() if k != "vars"}
    used: dict[str, dict[str, Any]] = {}
    if isinstance(stages, list):
        out["stages"] = []
        for index, table in enumerate(stages):
            for made, names in _expand_stage(table, index, values, file):
                out["stages"].append(made)
                if isinstance(made, dict) and isinstance(made.get("name"), str):
                    used[made["name"]] = names
    return Expanded(out, var_files, used)


# -- vars ----------------------------------------------------------------------


def _read_vars(spec: Any, file: Path) -> tuple[dict[str, Any], list[list[str]]]:
    """The variables of ``vars`` (a table, or a list of tables and file names)."""
    parts = spec if isinstance(spec, list) else [spec]
    values: dict[str, Any] = {}
    files: list[list[str]] = []
    for part in parts:
        if isinstance(part, str):
            path = (file.parent / part).resolve()
            part = _read_vars_file(path, part, file)
            files.append([str(path), hashlib.sha256(path.read_bytes()).hexdigest()])
        if not isinstance(part, dict):
            raise ConfigError(
                f"{file}: vars: expected a table or a file name (or a list of them), "
                f"got {type(part).__name__}"
            )
        values.update(part)
    return values, files


def _read_vars_file(path: Path, name: str, file: Path) -> dict[str, Any]:
    from ._config import parse_pipeline_bytes  # the pipeline file's own parser, TOML or JSON

    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{file}: vars: cannot read {name!r}: {exc.strerror}") from None
    try:
        return parse_pipeline_bytes(path, raw)
    except ConfigError as exc:
        raise ConfigError(f"{file}: vars: {exc}") from None


# -- one stage ------------------------------------------------------------------


def _expand_stage(
    table: Any, index: int, values: dict[str, Any], file: Path
) -> list[tuple[Any, dict[str, Any]]]:
    """The stages a table makes, each with the variables it used."""
    if not isinstance(table, dict):
        return [(table, {})]  # structuring says what is wrong with it
    where = f"{file}: stages[{index}]" + (f" ({table['name']})" if "name" in table else "")
    if "foreach" in table and "matrix" in table:
        raise ConfigError(f"{where}: foreach and matrix: give one of them")
    body = {k: v for k, v in table.items() if k not in ("foreach", "matrix")}
    if "foreach" in table:
        items = _foreach_items(table["foreach"], values, f"{where}: foreach")
    elif "matrix" in table:
        items = _matrix_items(table["matrix"], values, f"{where}: matrix")
    else:
        used: dict[str, Any] = {}
        return [(_substitute(body, values, where, used), used)]
    base = body.get("name")
    if not isinstance(base, str):
        raise ConfigError(f"{where}: a stage with foreach or matrix needs a name")
    made = []
    for suffix, scope in items:
        used = {}
        stage = _substitute(body, {**values, **scope}, f"{where}@{suffix}", used)
        stage["name"] = f"{base}@{suffix}"
        made.append((stage, used))
    return made


def _foreach_items(
    spec: Any, values: dict[str, Any], where: str
) -> list[tuple[str, dict[str, Any]]]:
    """(name suffix, variables) for each item: a list gives ``item`` (named
    by the item when it is a scalar, else by its index); a table gives
    ``key`` and ``item``."""
    spec = _substitute(spec, values, where)
    if isinstance(spec, dict):
        return [(str(key), {"key": key, "item": item}) for key, item in spec.items()]
    if isinstance(spec, list):
        return [
            (_suffix(item) if isinstance(item, _SCALARS) else str(i), {"item": item})
            for i, item in enumerate(spec)
        ]
    raise ConfigError(f"{where}: expected a list or a table, got {type(spec).__name__}")


def _matrix_items(
    spec: Any, values: dict[str, Any], where: str
) -> list[tuple[str, dict[str, Any]]]:
    """One item per combination of the matrix's lists, in their order:
    ``item`` is a table of one value per name."""
    spec = _substitute(spec, values, where)
    if not isinstance(spec, dict) or not spec:
        raise ConfigError(f"{where}: expected a table of lists, e.g. {{ seed = [1, 2] }}")
    for name, options in spec.items():
        if not isinstance(options, list) or not options:
            raise ConfigError(f"{where}.{name}: expected a non-empty list, got {options!r}")
    names = list(spec)
    items = []
    for combination in itertools.product(*(spec[n] for n in names)):
        item = dict(zip(names, combination))
        suffix = "-".join(
            _suffix(v) if isinstance(v, _SCALARS) else str(i) for i, v in enumerate(combination)
        )
        items.append((suffix, {"item": item}))
    return items


def _suffix(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


# -- ${...} ----------------------------------------------------------------------


def _substitute(
    value: Any, values: dict[str, Any], where: str, used: dict[str, Any] | None = None
) -> Any:
    """``value`` with every ``${...}`` in its strings replaced (the names
    looked up go to ``used``, with their values)."""
    if isinstance(value, str):
        return _interpolate(value, values, where, used)
    if isinstance(value, dict):
        return {k: _substitute(v, values, where, used) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, values, where, used) for v in value]
    return value


def _interpolate(text: str, values: dict[str, Any], where: str, used: dict[str, Any] | None) -> Any:
    if "${" not in text:
        return text
    whole = _REFERENCE.fullmatch(text)
    if whole is not None and whole.group(1) is not None:
        return _lookup(whole.group(1), values, where, used)

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$${":
            return "${"
        if match.group(1) is None:
            raise ConfigError(
                f"{where}: {text!r}: '${{' not followed by a name and '}}' "
                "(write $${ for a literal ${)"
            )
        found = _lookup(match.group(1), values, where, used)
        if not isinstance(found, _SCALARS):
            raise ConfigError(
                f"{where}: {text!r}: ${{{match.group(1)}}} is a {type(found).__name__}; "
                "only a string that is exactly one ${...} can take a list or a table"
            )
        return _suffix(found)

    return _REFERENCE.sub(replace, text)


def _lookup(name: str, values: dict[str, Any], where: str, used: dict[str, Any] | None) -> Any:
    """The value of ``a.b.c``: key ``a`` of the variables, then its keys."""
    parts = name.strip().split(".")
    found: Any = values
    for depth, part in enumerate(parts):
        if not isinstance(found, dict) or part not in found:
            known = sorted(found) if isinstance(found, dict) else []
            prefix = ".".join(parts[:depth])
            close = difflib.get_close_matches(part, known, n=1)
            hint = f" (did you mean {'.'.join([*parts[:depth], close[0]])!r}?)" if close else ""
            what = f"{prefix!r} has no key {part!r}" if prefix else f"no variable {part!r}"
            names = ", ".join(known) or "none"
            raise ConfigError(f"{where}: ${{{name}}}: {what}{hint}; defined: {names}")
        found = found[part]
    if used is not None:  # kept as text unless a plain JSON scalar (a TOML date, say)
        used[name.strip()] = found if isinstance(found, _SCALARS) else _plain(found)
    return found


def _plain(value: Any) -> Any:
    """A list or table of a variable as JSON would keep it (dates as text)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value if isinstance(value, _SCALARS) else str(value)
