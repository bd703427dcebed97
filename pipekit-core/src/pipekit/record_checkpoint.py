"""Checkpoints of stages in the checkpoint store: their bytes, and where
they are kept. Every checkpoint pipekit writes goes through this module (the
record loop's, and a whole-stage processor's ``ctx.checkpoint``), so that a
new storage format is a change in one place.

A checkpoint is stored under namespace ``<pipeline>.<stage>`` and id
``records`` (record stages) or ``stage`` (``ctx.checkpoint``) as::

    pipekit-checkpoint 1\\n<sha256 of the body, hex>\\n<body: JSON>

and is bound to the stage fingerprint it was saved for: a checkpoint of
another fingerprint (the inputs, params or processor changed since) is never
returned. The store's ``put`` is atomic; the checksum also catches a store
that returns damaged bytes, which are then discarded like a stale checkpoint.
"""

from __future__ import annotations

import hashlib
import logging
import re
from typing import Any

from . import _json

__all__ = [
    "RecordCheckpoint",
    "encode",
    "decode",
    "namespace_for",
    "RECORDS_ID",
    "STAGE_ID",
]

log = logging.getLogger("pipekit.checkpoint")

MAGIC = b"pipekit-checkpoint 1\n"
RECORDS_ID = "records"
STAGE_ID = "stage"


def namespace_for(pipeline: str, stage: str) -> str:
    """The checkpoint namespace of a stage (characters a store may refuse
    are replaced by ``_``)."""
    return re.sub(r"[^A-Za-z0-9_.:-]", "_", f"{pipeline}.{stage}")


def encode(payload: dict[str, Any]) -> bytes:
    body = _json.dumps(payload)
    return MAGIC + hashlib.sha256(body).hexdigest().encode() + b"\n" + body


def decode(raw: bytes) -> dict[str, Any] | None:
    """The payload, or None when the bytes are not an intact checkpoint."""
    if not raw.startswith(MAGIC):
        return None
    head, sep, body = raw[len(MAGIC) :].partition(b"\n")
    if not sep or hashlib.sha256(body).hexdigest().encode() != head:
        return None
    try:
        payload = _json.loads(body)
    except ValueError:
        return None
    return payload if isinstance(payload, dict) else None


class RecordCheckpoint:
    """The checkpoint of one record stage execution (one fingerprint).

    ``save(state)`` stores a dict (positions, counters, processor state);
    ``load()`` returns the state saved for this fingerprint, or None: a
    checkpoint of another fingerprint, or a damaged one, is deleted with a
    warning that says why; ``peek()`` is ``load()`` without deleting or
    warning (for ``pipekit status``); ``clear()`` deletes it.
    ``fence`` is ``(lock key, fencing token)`` of the lease the writer holds.
    """

    def __init__(
        self,
        store: Any,
        namespace: str,
        fingerprint: str,
        *,
        fence: tuple[str, int] | None = None,
        id: str = RECORDS_ID,
        label: str = "",
    ) -> None:
        self.store = store
        self.namespace = namespace
        self.fingerprint = fingerprint
        self.fence = fence
        self.id = id
        self.label = label or namespace

    def save(self, state: dict[str, Any]) -> None:
        payload = {"fingerprint": self.fingerprint, "state": state}
        self.store.put(self.namespace, self.id, encode(payload), fence=self.fence)

    def _read(self) -> tuple[dict[str, Any] | None, str | None]:
        """(state, None), (None, None) when there is none, or (None, why
        it cannot be used)."""
        raw = self.store.get(self.namespace, self.id)
        if raw is None:
            return None, None
        payload = decode(raw)
        if payload is None or not isinstance(payload.get("state"), dict):
            return None, "it is damaged (its checksum or format does not match)"
        if payload.get("fingerprint") != self.fingerprint:
            return None, "it was saved for other inputs, params or processor version"
        return payload["state"], None

    def peek(self) -> dict[str, Any] | None:
        try:
            state, _why = self._read()
        except Exception:
            return None
        return state

    def load(self) -> dict[str, Any] | None:
        state, why = self._read()
        if why is not None:
            self.discard(why)
        return state

    def discard(self, why: str) -> None:
        """Delete the checkpoint, saying why."""
        log.warning(
            "%s: discarding its checkpoint: %s; starting from the beginning", self.label, why
        )
        self.clear()

    def clear(self) -> None:
        self.store.delete(self.namespace, self.id)
