"""Idempotency records in Redis: one hash per key, ``<prefix>idem:<key>``,
holding ``record`` (the record as JSON), ``owner`` (the claim id that
``replace`` compares) and ``exp`` (``expires`` in ms). A record is live until
``expires`` by the caller's clock, as with every store; the key's Redis
expiry (``PEXPIREAT``) is ``expires`` plus :data:`EXPIRED_GRACE_S`, so Redis
drops expired records by itself while ``sweep`` (and the generation it
changes) still sees the ones that expired recently.

Every transition is one Lua script: ``create`` (put-if-absent), ``replace``
(compare-and-swap on the owner), ``put_many`` (the runner's batched commit,
which refuses records whose fencing token is stale).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

import attrs
from pipekit import _json
from pipekit.errors import FencedOut
from pipekit.state import idem_record_fields, warn_damaged
from pipekit.stores import IdemRecord

from .connection import RedisConnection

__all__ = ["RedisIdempotencyStore"]

log = logging.getLogger("pipekit.redis.idempotency")

EXPIRED_GRACE_S = 3600.0
"""Seconds an expired record stays in Redis (invisible) before Redis drops it."""

_FIELDS = tuple(a.name for a in attrs.fields(IdemRecord))
_KNOWN = frozenset(_FIELDS)


def _encode(rec: IdemRecord) -> bytes:
    return _json.dumps({name: getattr(rec, name) for name in _FIELDS})


def _decode(raw: Any, key: str, rkey: str, *, check_expiry: bool = True) -> IdemRecord | None:
    if raw is None:
        return None
    try:
        record = IdemRecord(**idem_record_fields(_json.loads(raw), _KNOWN))
    except (ValueError, TypeError) as exc:  # damaged: reads as absent, the work reruns
        warn_damaged(
            f"Redis key {rkey} (record {key!r})", str(exc), "read as absent; the work reruns"
        )
        return None
    if record.key != key:
        return None
    if check_expiry and record.expires is not None and record.expires <= time.time():
        return None
    return record


def _exp(rec: IdemRecord) -> list[str]:
    """The ``exp`` field and the key's PEXPIREAT of a record."""
    if rec.expires is None:
        return ["", ""]
    return [str(int(rec.expires * 1000)), str(int((rec.expires + EXPIRED_GRACE_S) * 1000))]


def _now_ms() -> str:
    return str(int(time.time() * 1000))


def _tag() -> str:
    return uuid.uuid4().hex


def _glob_escape(text: str) -> str:
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)


class RedisIdempotencyStore:
    fencing = True
    """Refuses records whose fencing token is lower than the lock's counter."""

    def __init__(self, conn: RedisConnection) -> None:
        self.conn = conn
        self._base = conn.key("idem", "")
        self._gen = conn.key("generation", "idem")

    def __repr__(self) -> str:
        return f"RedisIdempotencyStore({self.conn.where()}, keys {self._base}*)"

    def _rkey(self, key: str) -> str:
        return self._base + key

    def get(self, key: str) -> IdemRecord | None:
        raw = self.conn.call(
            lambda c: c.hget(self._rkey(key), "record"), f"reading the record {key!r}"
        )
        return _decode(raw, key, self._rkey(key))

    def get_many(self, keys: Iterable[str]) -> dict[str, IdemRecord]:
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return {}

        def build(pipe: Any) -> None:
            for key in wanted:
                pipe.hget(self._rkey(key), "record")

        raws = self.conn.pipeline(build, f"reading {len(wanted)} records")
        out = {}
        for key, raw in zip(wanted, raws):
            rec = _decode(raw, key, self._rkey(key))
            if rec is not None:
                out[key] = rec
        return out

    def create(self, record: IdemRecord) -> IdemRecord | None:
        rkey = self._rkey(record.key)
        for _ in range(3):
            live = self.conn.script(
                "create",
                [rkey],
                [_encode(record), record.owner or "", *_exp(record), _now_ms()],
                f"claiming {record.key!r}",
            )
            if live is None:
                return None
            found = _decode(live, record.key, rkey)
            if found is not None:
                return found
            # Unreadable: not a live record. Remove exactly it and try again.
            self._delete_if(rkey, live, f"claiming {record.key!r}")
        raise RuntimeError(f"could not claim {record.key!r}: its record keeps changing")

    def replace(self, record: IdemRecord, *, expect_owner: str | None) -> bool:
        ok = self.conn.script(
            "replace",
            [self._rkey(record.key)],
            [
                _encode(record),
                record.owner or "",
                *_exp(record),
                _now_ms(),
                "1" if expect_owner is not None else "0",
                expect_owner or "",
            ],
            f"updating {record.key!r}",
        )
        return int(ok) == 1

    def put_many(self, records: Iterable[IdemRecord], *, durable: bool = True) -> None:
        recs = list(records)
        if not recs:
            return
        keys = [self._rkey(r.key) for r in recs]
        fences = []
        args: list[Any] = [len(recs)]
        for rec, rkey in zip(recs, keys):
            if rec.token is not None and rec.fence is not None:
                fences.append(self.conn.key("fence", rec.fence))
                token = str(rec.token)
            else:
                fences.append(rkey)
                token = ""
            args += [_encode(rec), rec.owner or "", *_exp(rec), token]
        refused = self.conn.script(
            "put_many", keys + fences, args, f"writing {len(recs)} record(s)"
        )
        if durable:
            self.conn.wait_durable()
        if refused:
            names = [recs[int(i) - 1].key for i in refused]
            raise FencedOut(
                f"refused {len(names)} record(s) written under a lock that another runner "
                f"has taken since (stale fencing token): {', '.join(names[:5])}"
                + (" ..." if len(names) > 5 else ""),
                keys=names,
            )

    def delete(self, key: str) -> None:
        self.conn.script(
            "delete", [self._rkey(key), self._gen], [_tag()], f"deleting the record {key!r}"
        )

    def _delete_if(self, rkey: str, raw: Any, doing: str) -> int:
        return int(self.conn.script("delete_if", [rkey, self._gen], [raw, _tag()], doing))

    def generation(self) -> str | None:
        """A random tag, replaced whenever ``delete`` or ``sweep`` removes a
        record, and new whenever Redis lost it (a restart without
        persistence, a flush): the runner trusts its memory of committed
        stages only while the tag is unchanged. Records Redis expires by
        itself do not change it (the runner's stage records never expire)."""
        raw = self.conn.script("generation", [self._gen], [_tag()], "reading the generation")
        return raw.decode() if isinstance(raw, bytes) else str(raw)

    def _scan(self) -> list[str]:
        pattern = _glob_escape(self._base) + "*"
        raw_keys = self.conn.call(
            lambda c: list(c.scan_iter(match=pattern, count=1000)), "listing records"
        )
        return [
            r.decode("utf-8", "surrogateescape") if isinstance(r, bytes) else r for r in raw_keys
        ]

    def _expiries(self, rkeys: list[str]) -> list[Any]:
        def build(pipe: Any) -> None:
            for rkey in rkeys:
                pipe.hget(rkey, "exp")

        return self.conn.pipeline(build, f"reading {len(rkeys)} expiries") if rkeys else []

    def keys(self) -> Iterator[str]:
        rkeys = self._scan()
        now = time.time() * 1000
        cut = len(self._base)
        for rkey, exp in zip(rkeys, self._expiries(rkeys)):
            if exp is None:
                continue  # gone meanwhile
            if exp not in (b"", "") and int(exp) <= now:
                continue
            yield rkey[cut:]

    def sweep(self, now: float | None = None) -> int:
        """Remove the records expired at ``now`` (default: the present) and
        damaged ones; return how many. Redis drops expired records by itself
        :data:`EXPIRED_GRACE_S` after they expire; ``sweep`` is for sooner."""
        at = str(int((time.time() if now is None else now) * 1000))
        removed = 0
        rkeys = self._scan()
        for rkey, exp in zip(rkeys, self._expiries(rkeys)):
            if exp is None:
                continue
            if exp not in (b"", "") and int(exp) <= int(at):
                removed += int(
                    self.conn.script("delete_expired", [rkey, self._gen], [at, _tag()], "sweeping")
                )
                continue
            raw = self.conn.call(lambda c: c.hget(rkey, "record"), "sweeping")  # noqa: B023
            if (
                raw is not None
                and _decode(raw, rkey[len(self._base) :], rkey, check_expiry=False) is None
            ):
                removed += self._delete_if(rkey, raw, "sweeping")  # damaged
        return removed

    def connect(self) -> None:
        self.conn.connect()

    def doctor(self) -> list[Any]:
        from .doctor import checks

        return checks(self.conn, "idempotency")
