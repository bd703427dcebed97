"""The index of a namespace: one entry of metadata per checkpoint, stored
through the same byte store under the reserved id ``_index`` (in the blob
container of :mod:`.format`, with its own SHA-256), and rewritten whole,
atomically, after the blobs it points at are stored."""

from __future__ import annotations

import datetime as _dt
from typing import Any

import attrs
import orjson

from . import format as fmt
from .errors import CheckpointCorrupted

__all__ = ["CheckpointInfo", "Index", "INDEX_ID", "BLOB_PREFIX", "blob_id", "blob_number"]

INDEX_ID = "_index"
BLOB_PREFIX = "b-"
_COMPRESS_INDEX_OVER = 64 * 1024


def blob_id(n: int) -> str:
    return f"{BLOB_PREFIX}{n:010d}"


def blob_number(store_id: str) -> int | None:
    """N of a store id ``b-N``; None for any other id."""
    if not store_id.startswith(BLOB_PREFIX):
        return None
    digits = store_id[len(BLOB_PREFIX) :]
    return int(digits) if digits.isdigit() else None


@attrs.frozen
class CheckpointInfo:
    """What the index knows about one checkpoint.

    ``size`` is the serialized payload before compression (for a delta: the
    delta's), ``stored_size`` the bytes the store holds, ``sha256`` the
    SHA-256 of the stored payload (also in the blob's header; checked on
    every load). ``kind`` is ``full`` or ``delta``; a delta names its
    ``base`` (and ``base_seq``) and its ``chain`` length (deltas back to a
    full checkpoint). ``keys`` lists up to 20 top-level keys of a dict state
    (``n_keys`` counts them all). ``hidden`` entries are older checkpoints
    whose id was saved again; they stay only while a delta needs them.
    """

    id: str
    seq: int
    time: float
    kind: str
    size: int
    stored_size: int
    sha256: str
    codec: str
    compression: str | None
    level: int | None
    key_id: str | None
    base_seq: int | None
    base: str | None
    chain: int
    full_size: int
    keys: tuple[str, ...]
    n_keys: int | None
    metadata: dict[str, Any]
    type: str | None
    blob: str
    hidden: bool = False
    format: int = fmt.FORMAT_VERSION
    namespace: str = ""

    @property
    def compressed(self) -> bool:
        return self.compression is not None

    @property
    def encrypted(self) -> bool:
        return self.key_id is not None

    @property
    def created(self) -> _dt.datetime:
        return _dt.datetime.fromtimestamp(self.time, tz=_dt.UTC)

    def to_entry(self) -> dict[str, Any]:
        """The index entry (and, minus blob/stored_size/hidden, the header)."""
        entry = attrs.asdict(self, recurse=False)
        del entry["namespace"]
        entry["keys"] = list(self.keys)
        return entry

    @classmethod
    def from_entry(cls, e: dict[str, Any], namespace: str = "") -> CheckpointInfo:
        """An entry as :meth:`to_entry` wrote it (a missing field is a
        ``TypeError``, an unknown one is left out)."""
        known = {a.name: e[a.name] for a in attrs.fields(cls) if a.name in e}
        known["keys"] = tuple(known.get("keys") or ())
        known["namespace"] = namespace
        return cls(**known)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict for ``--json`` output."""
        out = self.to_entry()
        out["namespace"] = self.namespace
        out["compressed"] = self.compressed
        out["encrypted"] = self.encrypted
        out["created"] = self.created.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return out


class Index:
    """The entries of one namespace, by sequence number (saving order)."""

    def __init__(
        self, namespace: str, next_seq: int = 1, entries: list[CheckpointInfo] | None = None
    ) -> None:
        self.namespace = namespace
        self.next_seq = next_seq
        self.entries: dict[int, CheckpointInfo] = {}
        for e in sorted(entries or (), key=lambda e: e.seq):
            self.entries[e.seq] = e

    def copy(self) -> Index:
        return Index(self.namespace, self.next_seq, list(self.entries.values()))

    def visible(self) -> list[CheckpointInfo]:
        return [e for e in self.entries.values() if not e.hidden]

    def latest(self) -> CheckpointInfo | None:
        """The newest checkpoint (the base of the next delta)."""
        if not self.entries:
            return None
        return self.entries[max(self.entries)]

    def find(self, id: str) -> CheckpointInfo | None:
        """The visible checkpoint with this id."""
        for e in reversed(self.entries.values()):
            if e.id == id and not e.hidden:
                return e
        return None

    def dependents(self, seq: int) -> list[CheckpointInfo]:
        return [e for e in self.entries.values() if e.base_seq == seq]

    def chain(self, entry: CheckpointInfo) -> list[CheckpointInfo]:
        """``entry`` and its bases back to a full checkpoint, newest first."""
        out = [entry]
        seen = {entry.seq}
        while out[-1].base_seq is not None:
            base = self.entries.get(out[-1].base_seq)
            if base is None or base.seq in seen:
                raise CheckpointCorrupted(
                    f"checkpoint {entry.id!r} cannot be rebuilt: its delta base "
                    f"#{out[-1].base_seq} is not in the index",
                    entry.id,
                )
            seen.add(base.seq)
            out.append(base)
        return out

    # -- storage ---------------------------------------------------------------

    def to_bytes(self) -> bytes:
        payload = orjson.dumps(
            {
                "namespace": self.namespace,
                "next_seq": self.next_seq,
                "entries": [e.to_entry() for e in self.entries.values()],
            }
        )
        size = len(payload)
        compression = None
        if size > _COMPRESS_INDEX_OVER:
            from .compression import Compressor

            payload = Compressor(3, 0).compress(payload)
            compression = "zstd"
        header = {
            "kind": "index",
            "size": size,
            "compression": compression,
            "sha256": fmt.sha256_hex(payload),
        }
        return fmt.pack(header, payload)

    @classmethod
    def from_bytes(cls, raw: bytes, namespace: str) -> Index:
        what = f"the checkpoint index of {namespace!r}"
        header, payload = fmt.unpack(raw, what)
        if header.get("kind") != "index":
            raise CheckpointCorrupted(f"{what} is damaged: its header is not an index's")
        fmt.check_payload(header, payload, what, None, None)
        data: bytes | memoryview = payload
        if header.get("compression") == "zstd":
            from .compression import decompress

            data = decompress(payload, int(header.get("size", 0)), what, None)
        try:
            doc = orjson.loads(data)
            entries = [CheckpointInfo.from_entry(e, namespace) for e in doc["entries"]]
            return cls(namespace, int(doc["next_seq"]), entries)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise CheckpointCorrupted(f"{what} is damaged: {type(exc).__name__}: {exc}")
