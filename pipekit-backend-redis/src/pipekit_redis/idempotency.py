"""Idempotency records in Redis: one hash per key, ``<prefix>idem:<key>``,
holding ``record`` (the record as JSON) and ``owner`` (the claim id that
``replace`` compares). A record's ``expires`` becomes the key's expiry
(``PEXPIREAT``), so Redis drops expired records by itself.

Every transition is one Lua script: ``create`` (put-if-absent), ``replace``
(compare-and-swap on the owner), ``put_many`` (the runner's batched commit,
which refuses records whose fencing token is stale).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from typing import Any

import attrs
from pipekit import _json
from pipekit.backends.protocols import IdemRecord
from pipekit.errors import FencedOut

from .connection import RedisConnection

__all__ = ["RedisIdempotencyStore"]

log = logging.getLogger("pipekit.redis.idempotency")

_FIELDS = tuple(a.name for a in attrs.fields(IdemRecord))
_KNOWN = frozenset(_FIELDS)


def _encode(rec: IdemRecord) -> bytes:
    return _json.dumps({name: getattr(rec, name) for name in _FIELDS})


def _decode(raw: Any, key: str) -> IdemRecord | None:
    if raw is None:
        return None
    try:
        data = _json.loads(raw)
        record = IdemRecord(**{k: v for k, v in data.items() if k in _KNOWN})
    except (ValueError, TypeError, AttributeError):
        return None  # unreadable: treated as absent, the work reruns
    if record.key != key:
        return None
    if record.expires is not None and record.expires <= time.time():
        return None
    return record


def _pxat(rec: IdemRecord) -> str:
    return "" if rec.expires is None else str(int(rec.expires * 1000))


def _glob_escape(text: str) -> str:
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)


class RedisIdempotencyStore:
    fencing = True
    """Refuses records whose fencing token is lower than the lock's counter."""

    def __init__(self, conn: RedisConnection) -> None:
        self.conn = conn
        self._base = conn.key("idem", "")

    def _rkey(self, key: str) -> str:
        return self._base + key

    def get(self, key: str) -> IdemRecord | None:
        raw = self.conn.call(
            lambda c: c.hget(self._rkey(key), "record"), f"reading the record {key!r}"
        )
        return _decode(raw, key)

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
            rec = _decode(raw, key)
            if rec is not None:
                out[key] = rec
        return out

    def create(self, record: IdemRecord) -> IdemRecord | None:
        rkey = self._rkey(record.key)
        for _ in range(3):
            live = self.conn.script(
                "create",
                [rkey],
                [_encode(record), record.owner or "", _pxat(record)],
                f"claiming {record.key!r}",
            )
            if live is None:
                return None
            found = _decode(live, record.key)
            if found is not None:
                return found
            # Unreadable, or expired by our clock but not yet by the
            # server's: not a live record. Remove exactly it and try again.
            self.conn.script("delete_if", [rkey], [live], f"claiming {record.key!r}")
        raise RuntimeError(f"could not claim {record.key!r}: its record keeps changing")

    def replace(self, record: IdemRecord, *, expect_owner: str | None) -> bool:
        ok = self.conn.script(
            "replace",
            [self._rkey(record.key)],
            [
                _encode(record),
                record.owner or "",
                _pxat(record),
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
            args += [_encode(rec), rec.owner or "", _pxat(rec), token]
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
        self.conn.call(lambda c: c.delete(self._rkey(key)), f"deleting the record {key!r}")

    def keys(self) -> Iterator[str]:
        pattern = _glob_escape(self._base) + "*"
        cut = len(self._base)
        raw_keys = self.conn.call(
            lambda c: list(c.scan_iter(match=pattern, count=1000)), "listing records"
        )
        for raw in raw_keys:
            text = raw.decode("utf-8", "surrogateescape") if isinstance(raw, bytes) else raw
            yield text[cut:]

    def sweep(self, now: float | None = None) -> int:
        """Redis drops expired records by itself; this removes the records
        whose ``expires`` is at or before ``now`` (default: the present)
        that Redis still holds (e.g. when ``now`` is ahead of its clock)."""
        at = time.time() if now is None else now
        removed = 0
        for key in list(self.keys()):
            rkey = self._rkey(key)
            raw = self.conn.call(lambda c: c.hget(rkey, "record"), "sweeping")  # noqa: B023
            if raw is None:
                continue
            try:
                expires = _json.loads(raw).get("expires")
            except (ValueError, AttributeError):
                continue
            if expires is not None and expires <= at:
                removed += int(self.conn.script("delete_if", [self._rkey(key)], [raw], "sweeping"))
        return removed

    def connect(self) -> None:
        self.conn.connect()

    def doctor(self) -> list[Any]:
        from .doctor import checks

        return checks(self.conn, "idempotency")
