"""Record processors over lines: ``upper``, ``lower``, ``filter``, ``replace``."""

from __future__ import annotations

import re
from collections.abc import Iterator

import attrs
import pipekit


class Upper(pipekit.RecordStage):
    """Upper-case every line."""

    name = "upper"
    version = "1"

    def process(self, record: str, params: None) -> Iterator[str]:
        yield record.upper()


class Lower(pipekit.RecordStage):
    """Lower-case every line."""

    name = "lower"
    version = "1"

    def process(self, record: str, params: None) -> Iterator[str]:
        yield record.lower()


def _valid_regex(_inst: object, _attr: object, value: str) -> None:
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"not a valid regular expression: {exc}") from None


@attrs.define
class FilterParams:
    pattern: str = attrs.field(validator=_valid_regex)
    """A Python regular expression, searched anywhere in the line."""
    keep: bool = True
    """True: keep the matching lines; false: drop them."""
    ignore_case: bool = False


class Filter(pipekit.RecordStage):
    """Keep (or drop) the lines that match a regular expression."""

    name = "filter"
    version = "1"
    Params = FilterParams

    def __init__(self) -> None:
        self._compiled: dict[tuple[str, bool], re.Pattern[str]] = {}

    def process(self, record: str, params: FilterParams) -> Iterator[str]:
        key = (params.pattern, params.ignore_case)
        rx = self._compiled.get(key)
        if rx is None:
            rx = self._compiled[key] = re.compile(
                params.pattern, re.IGNORECASE if params.ignore_case else 0
            )
        if (rx.search(record) is not None) == params.keep:
            yield record


@attrs.define
class ReplaceParams:
    pattern: str = attrs.field(validator=_valid_regex)
    """A Python regular expression."""
    replacement: str = ""
    """What each match becomes (``\\1`` refers to groups)."""
    count: int = 0
    """At most this many replacements per line (0: all)."""


class Replace(pipekit.RecordStage):
    """Replace regular-expression matches in every line."""

    name = "replace"
    version = "1"
    Params = ReplaceParams

    def __init__(self) -> None:
        self._compiled: dict[str, re.Pattern[str]] = {}

    def process(self, record: str, params: ReplaceParams) -> Iterator[str]:
        rx = self._compiled.get(params.pattern)
        if rx is None:
            rx = self._compiled[params.pattern] = re.compile(params.pattern)
        yield rx.sub(params.replacement, record, count=params.count)
