"""Retention policies: which checkpoints a save or ``prune`` deletes."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from .errors import CheckpointConfigError
from .index import CheckpointInfo

__all__ = ["Retention", "KEEP_ALL", "doomed"]


@attrs.frozen
class Retention:
    """Keep the ``keep_last`` newest checkpoints and those at most
    ``max_age_days`` old (each None: no limit; both None: keep all).

    A checkpoint must pass both limits to be kept. Whatever the policy, the
    newest checkpoint is always kept, and so is every checkpoint that a kept
    delta needs to be rebuilt (its chain of bases).
    """

    keep_last: int | None = None
    max_age_days: float | None = None

    def __attrs_post_init__(self) -> None:
        if self.keep_last is not None and (
            not isinstance(self.keep_last, int)
            or isinstance(self.keep_last, bool)
            or self.keep_last < 1
        ):
            raise CheckpointConfigError(
                f"retention keep_last must be an integer of 1 or more, got {self.keep_last!r}"
            )
        if self.max_age_days is not None and (
            not isinstance(self.max_age_days, (int, float))
            or isinstance(self.max_age_days, bool)
            or self.max_age_days < 0
        ):
            raise CheckpointConfigError(
                f"retention max_age_days must be a number of 0 or more, got {self.max_age_days!r}"
            )

    @property
    def keeps_all(self) -> bool:
        return self.keep_last is None and self.max_age_days is None

    @classmethod
    def from_options(cls, options: Any) -> Retention:
        if options is None:
            return KEEP_ALL
        if isinstance(options, Retention):
            return options
        if not isinstance(options, Mapping):
            raise CheckpointConfigError(
                f"retention must be a table like {{keep_last = 5}}, got {options!r}"
            )
        unknown = sorted(set(options) - {"keep_last", "max_age_days"})
        if unknown:
            raise CheckpointConfigError(
                f"unknown retention option(s): {', '.join(unknown)} "
                "(expected keep_last or max_age_days)"
            )
        return cls(keep_last=options.get("keep_last"), max_age_days=options.get("max_age_days"))

    def describe(self) -> str:
        if self.keeps_all:
            return "keep all"
        parts = []
        if self.keep_last is not None:
            parts.append(f"keep the {self.keep_last} newest")
        if self.max_age_days is not None:
            parts.append(f"delete those older than {self.max_age_days:g} days")
        return ", ".join(parts)


KEEP_ALL = Retention()


def doomed(entries: Iterable[CheckpointInfo], policy: Retention, now: float) -> set[int]:
    """Sequence numbers of the entries ``policy`` deletes.

    ``entries`` holds visible and hidden (replaced) entries. Hidden entries
    are kept only while a kept delta needs them."""
    entries = sorted(entries, key=lambda e: e.seq)
    by_seq = {e.seq: e for e in entries}
    visible = [e for e in entries if not e.hidden]
    keep: set[int] = set()
    if visible:
        chosen = visible
        if policy.keep_last is not None:
            chosen = chosen[-policy.keep_last :]
        if policy.max_age_days is not None:
            oldest = now - policy.max_age_days * 86400.0
            chosen = [e for e in chosen if e.time >= oldest]
        keep = {e.seq for e in chosen}
        keep.add(visible[-1].seq)
    needed = set(keep)
    for seq in keep:
        base = by_seq[seq].base_seq
        while base is not None and base not in needed and base in by_seq:
            needed.add(base)
            base = by_seq[base].base_seq
    return {e.seq for e in entries} - needed
