"""Dead letters in Redis, for record stages of a pipeline on the ``redis``
backend (``pipekit dlq`` works on them unchanged).

Per pipeline ``P`` (written ``<len>:<P>`` in keys, so that no name can run
into another's keys):

- ``<prefix>dlq:<len>:<P>:seq``: the id counter (``INCR``);
- ``<prefix>dlq:<len>:<P>:l:<id>``: one hash per dead letter, its fields;
- ``<prefix>dlq:<len>:<P>:ident``: a hash from the dead letter's identity
  (stage, fingerprint, input index, offset) to its id, for the upsert;
- ``<prefix>dlq:<len>:<P>:s:<stage>``: one sorted set per stage whose members
  ``<input index>:<offset>:<id>`` (zero-padded) sort by position: a resumed
  stage purges "from this position on" with one range;
- ``<prefix>dlq:<len>:<P>:stages``: the stages that have dead letters.

A sorted set rather than a stream or list per stage: dead letters are
upserted (a record failing again after a resume replaces its own entry),
deleted one by one (``dlq retry``) and purged by position, which a stream or
a list can only do by rewriting it. Each change is one Lua script.
``add`` waits for the AOF fsync where Redis can say so (``WAITAOF``); else
a dead letter is as durable as Redis's persistence (``pipekit doctor``).
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable
from typing import Any

from pipekit.state import warn_damaged
from pipekit.stores import DEAD_LETTER_FIELDS, DeadLetter

from .connection import RedisConnection

__all__ = ["RedisDeadLetterStore"]

FIELDS = DEAD_LETTER_FIELDS
_INTS = {"input_index", "offset", "line", "attempts"}
_FLOATS = {"first_failed", "last_failed"}
_TEXT = set(FIELDS) - _INTS - _FLOATS - {"record"}


def _member_prefix(input_index: int, offset: int) -> str:
    return f"{input_index:010d}:{offset:020d}:"


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _field(name: str, value: Any) -> Any:
    """One field of a stored dead letter, as its type; ValueError when it
    is missing or not of that type."""
    if value is None:
        raise ValueError(f"no field {name!r}")
    if name in _INTS:
        return int(value)
    if name in _FLOATS:
        return float(value)
    if name == "record":
        return bytes(value)
    return _text(value)


def _member_id(member: Any) -> int | None:
    """The id at the end of a stage's sorted-set member (None: damaged)."""
    try:
        return int(_text(member).rsplit(":", 1)[1])
    except (IndexError, ValueError):
        return None


class RedisDeadLetterStore:
    def __init__(self, conn: RedisConnection) -> None:
        self.conn = conn

    def _base(self, pipeline: str) -> str:
        return self.conn.key("dlq", f"{len(pipeline)}:{pipeline}:")

    @staticmethod
    def _identity(letter: Any) -> str:
        return f"{letter.stage}\0{letter.fingerprint}\0{letter.input_index}\0{letter.offset}"

    def _letter(self, raw: dict[Any, Any], id: int, base: str) -> Any:
        """The dead letter stored as ``raw``; None, with a warning, when
        it is damaged (a field missing or not of its type)."""
        data = {_text(k): v for k, v in raw.items()}
        try:
            return DeadLetter(**{name: _field(name, data.get(name)) for name in FIELDS}, id=id)
        except (TypeError, ValueError) as exc:
            warn_damaged(f"Redis key {base}l:{id}", str(exc), "it is left out")
            return None

    # -- the protocol ---------------------------------------------------------------

    def add(self, letter: Any) -> int:
        base = self._base(letter.pipeline)
        args: list[Any] = [
            base,
            self._identity(letter),
            _member_prefix(letter.input_index, letter.offset),
        ]
        for name in FIELDS:
            value = getattr(letter, name)
            if name in _FLOATS:
                value = repr(float(value))
            args += [name, value]
        keys = [base + "seq", base + "ident", base + "stages"]
        letter_id = int(
            self.conn.script("dlq_add", keys, args, f"dead-lettering a record of {letter.stage!r}")
        )
        self.conn.wait_durable()
        return letter_id

    def list(
        self,
        pipeline: str,
        *,
        stage: str | None = None,
        fingerprint: str | None = None,
        limit: int | None = None,
    ) -> builtins.list[Any]:
        base = self._base(pipeline)
        stages = [stage] if stage is not None else sorted(self._stages(base))
        out: builtins.list[Any] = []
        for name in stages:
            zkey = base + "s:" + name
            members = self.conn.call(
                lambda c: c.zrange(zkey, 0, -1),  # noqa: B023
                "listing dead letters",
            )
            ids = [i for i in (_member_id(m) for m in members) if i is not None]
            if not ids:
                continue

            def build(pipe: Any, ids: builtins.list[int] = ids) -> None:
                for i in ids:
                    pipe.hgetall(f"{base}l:{i}")

            for i, raw in zip(ids, self.conn.pipeline(build, "reading dead letters")):
                if not raw:
                    continue
                letter = self._letter(raw, i, base)
                if letter is None or (
                    fingerprint is not None and letter.fingerprint != fingerprint
                ):
                    continue
                out.append(letter)
                if limit is not None and len(out) >= limit:
                    return out
        return out

    def _stages(self, base: str) -> builtins.list[str]:
        raw = self.conn.call(lambda c: c.smembers(base + "stages"), "listing dead letters")
        return [_text(s) for s in raw]

    def get(self, pipeline: str, id: int) -> Any:
        base = self._base(pipeline)
        raw = self.conn.call(lambda c: c.hgetall(f"{base}l:{int(id)}"), "reading a dead letter")
        return self._letter(raw, int(id), base) if raw else None

    def delete(self, pipeline: str, ids: Iterable[int]) -> int:
        wanted = [str(int(i)) for i in ids]
        if not wanted:
            return 0
        base = self._base(pipeline)
        return int(
            self.conn.script(
                "dlq_delete",
                [base + "ident", base + "stages"],
                [base, *wanted],
                "deleting dead letters",
            )
        )

    def _per_stage(
        self,
        pipeline: str,
        stage: str | None,
        fingerprint: str | None,
        from_position: tuple[int, int] | None,
        count_only: bool,
    ) -> int:
        base = self._base(pipeline)
        stages = [stage] if stage is not None else self._stages(base)
        start = _member_prefix(*from_position) if from_position is not None else ""
        doing = "counting dead letters" if count_only else "purging dead letters"
        total = 0
        for name in stages:
            total += int(
                self.conn.script(
                    "dlq_purge",
                    [base + "ident", base + "stages"],
                    [base, name, fingerprint or "", start, "1" if count_only else "0"],
                    doing,
                )
            )
        return total

    def purge(
        self,
        pipeline: str,
        *,
        stage: str | None = None,
        fingerprint: str | None = None,
        from_position: tuple[int, int] | None = None,
    ) -> int:
        return self._per_stage(pipeline, stage, fingerprint, from_position, False)

    def count(
        self, pipeline: str, *, stage: str | None = None, fingerprint: str | None = None
    ) -> int:
        return self._per_stage(pipeline, stage, fingerprint, None, True)

    def connect(self) -> None:
        self.conn.connect()

    def close(self) -> None:
        """Nothing to close: the connection is shared by the process."""
