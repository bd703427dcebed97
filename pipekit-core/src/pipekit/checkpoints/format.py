"""The container every stored checkpoint blob (and the index) is written in.

::

    offset  size  field
    0       4     magic b"PKCP"
    4       1     format version (1)
    5       4     header length H (big-endian)
    9       4     CRC-32 of bytes 4..9 and of the header
    13      H     header: canonical JSON (sorted keys)
    13+H    ...   payload: the stored bytes (compressed, then encrypted)

The first 13 bytes keep this layout in every format version, so that a
reader can tell "written by a newer pipekit" (the CRC holds, the version is
unknown) from "damaged" (the CRC fails). The header carries the SHA-256 of
the payload; the index carries it too, and every load checks both.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from typing import Any

import orjson

from .errors import CheckpointCorrupted, CheckpointVersionError

__all__ = ["MAGIC", "FORMAT_VERSION", "pack", "unpack", "sha256_hex"]

MAGIC = b"PKCP"
FORMAT_VERSION = 1
_PREFIX = struct.Struct(">4sBII")


def sha256_hex(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def _crc(version: int, header: bytes | memoryview) -> int:
    return zlib.crc32(header, zlib.crc32(struct.pack(">BI", version, len(header))))


def pack(header: dict[str, Any], payload: bytes) -> bytes:
    """One blob: prefix, header, payload."""
    head = orjson.dumps(header, option=orjson.OPT_SORT_KEYS)
    prefix = _PREFIX.pack(MAGIC, FORMAT_VERSION, len(head), _crc(FORMAT_VERSION, head))
    return b"".join((prefix, head, payload))


def unpack(blob: bytes, what: str, id: str | None = None) -> tuple[dict[str, Any], memoryview]:
    """``(header, payload)`` of a blob whose prefix and header are intact.

    Raises :class:`CheckpointCorrupted` (naming ``what``) when they are not,
    and :class:`CheckpointVersionError` for a format newer than this one.
    The payload is not checked here (see :func:`check_payload`)."""
    view = memoryview(blob)
    if len(view) < _PREFIX.size:
        raise CheckpointCorrupted(f"{what} is damaged: {len(view)} bytes, too short", id)
    magic, version, hlen, crc = _PREFIX.unpack_from(view)
    if magic != MAGIC:
        raise CheckpointCorrupted(f"{what} is damaged: not a pipekit checkpoint (bad magic)", id)
    if len(view) < _PREFIX.size + hlen:
        raise CheckpointCorrupted(f"{what} is damaged: truncated header", id)
    head = view[_PREFIX.size : _PREFIX.size + hlen]
    if _crc(version, head) != crc:
        raise CheckpointCorrupted(f"{what} is damaged: header checksum mismatch", id)
    if version < 1:
        raise CheckpointCorrupted(f"{what} is damaged: format version {version}", id)
    if version > FORMAT_VERSION:
        raise CheckpointVersionError(
            f"{what} is in checkpoint format {version}; this pipekit reads format "
            f"{FORMAT_VERSION} and older: upgrade pipekit to read it"
        )
    try:
        header = orjson.loads(head)
    except orjson.JSONDecodeError as exc:
        raise CheckpointCorrupted(f"{what} is damaged: header is not JSON ({exc})", id)
    if not isinstance(header, dict):
        raise CheckpointCorrupted(f"{what} is damaged: header is not an object", id)
    return header, view[_PREFIX.size + hlen :]


def check_payload(
    header: dict[str, Any], payload: memoryview, what: str, id: str | None, expect: str | None
) -> str:
    """Check the payload's SHA-256 against the header's and ``expect`` (the
    index's); returns it."""
    digest = sha256_hex(payload)
    for source, want in (("its header", str(header.get("sha256"))), ("the index", expect)):
        if want is not None and want != digest:
            raise CheckpointCorrupted(
                f"{what} is damaged: SHA-256 of its stored bytes is {digest[:16]}…, "
                f"{source} says {want[:16]}…",
                id,
            )
    return digest
