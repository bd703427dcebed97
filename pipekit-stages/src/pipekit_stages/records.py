"""Record processors over lines: ``upper``, ``lower``, ``filter``, ``replace``."""

from __future__ import annotations

import functools
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


@functools.lru_cache(maxsize=256)
def _regex(pattern: str, ignore_case: bool = False) -> re.Pattern[str]:
    """The compiled pattern, once per pattern (not once per record)."""
    return re.compile(pattern, re.IGNORECASE if ignore_case else 0)


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

    def process(self, record: str, params: FilterParams) -> Iterator[str]:
        if (_regex(params.pattern, params.ignore_case).search(record) is not None) == params.keep:
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

    def process(self, record: str, params: ReplaceParams) -> Iterator[str]:
        yield _regex(params.pattern).sub(params.replacement, record, count=params.count)
