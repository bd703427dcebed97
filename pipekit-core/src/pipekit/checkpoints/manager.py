"""``CheckpointManager``: format, integrity, compression, encryption, deltas,
index and retention, once, over any :class:`~pipekit.stores._protocols.CheckpointStore`.

Layout of a namespace in the store:

- ``b-NNNNNNNNNN``: one immutable blob per stored checkpoint (never
  overwritten once indexed; a checkpoint saved again under the same id gets
  a new blob);
- ``_index``: the index (every checkpoint's metadata), rewritten whole with
  one atomic ``put`` after the blob it points at is stored.

Order of every save: blob ``put`` -> index ``put`` -> deletion of what the
index no longer names. A process killed anywhere leaves an index that names
only complete blobs; a blob written but not yet indexed is garbage, removed
by the next save of a manager or by ``prune`` (or overwritten: its number is
the next one handed out). So are the temp files of puts a killed writer
left, in a store that can list them (``sweep_temps``); ``verify`` reports both.

One writer per namespace at a time: every change is made under the store's
namespace lock when it has one (``namespace_lock``; the file store's is an
OS lock), and a manager re-reads the index under it before each operation,
so writers in other processes never lose each other's saves.
"""

from __future__ import annotations

import itertools
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import attrs

from . import codec, delta
from . import format as fmt
from .errors import (
    CheckpointConfigError,
    CheckpointCorrupted,
    CheckpointError,
    CheckpointNotFound,
)
from .index import INDEX_ID, CheckpointInfo, Index, blob_id, blob_number
from .reports import CheckpointStats, Loaded, PruneResult, VerifyItem, VerifyReport
from .retention import KEEP_ALL, Retention, doomed

__all__ = ["CheckpointManager"]

log = logging.getLogger("pipekit.checkpoints")

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
_SORT_FIELDS = ("seq", "id", "time", "size", "stored_size", "chain")
LATEST = "latest"
_StrList = list[str]  # the methods after CheckpointManager.list cannot say list[str]
MAX_KEYS = 20
"""How many top-level keys of a dict state an index entry lists."""


@attrs.define
class _Cache:
    """The last checkpoint's state, private to the manager (the base of the
    next delta): decoded payloads (``payloads``, oldest first) until a diff
    needs objects, then the objects (``obj``)."""

    seq: int
    sha256: str
    payloads: list[bytes] | None
    obj: Any = None

    def holds(self, e: CheckpointInfo | None) -> bool:
        return e is not None and self.seq == e.seq and self.sha256 == e.sha256


def _materialize(payloads: list[bytes]) -> Any:
    """The state a chain of payloads (full first, then deltas) rebuilds."""
    with codec.gc_paused():
        state = codec.loads(payloads[0])
        for d in payloads[1:]:
            state = delta.apply(state, codec.loads(d))
    return state


def _diff(base: Any, value: Any, attrs_root: bool) -> bytes | None:
    """The serialized delta from ``base`` to ``value``, or None when
    ``value`` is not JSON-shaped (the full save then says how)."""
    try:
        with codec.gc_paused():
            return codec.dumps(delta.diff(base, value), attrs_root=attrs_root)
    except (TypeError, ValueError):
        return None


def _aad(
    seq: int, kind: str, base_seq: int | None, codec_name: str, compression: str | None
) -> bytes:
    """Associated data of an encrypted payload: its place in the namespace."""
    return b"pipekit-checkpoint\0" + codec.dumps(
        [fmt.FORMAT_VERSION, seq, kind, base_seq, codec_name, compression]
    )


class CheckpointManager:
    """Checkpoints of one ``namespace`` in a byte ``store``.

    Options (all keyword):

    - ``compression``: ``"zstd"`` (default) or None; ``level`` (default 3)
      and ``threads`` (None: worker threads for payloads of 1 MiB and more).
    - ``encryption``: None, or ``{"key_file": PATH}`` / ``{"key_env": VAR}``
      (needs ``pipekit-core[crypto]``): AES-GCM, the key id in each header.
    - ``retention``: a :class:`Retention` (or ``{"keep_last": N,
      "max_age_days": D}``) applied after every save; default: keep all.
    - ``deltas`` (default True): save the difference against the previous
      checkpoint when it is under ``delta_threshold`` (0.7) of the full
      size, for states whose full serialization is at least
      ``delta_min_size`` bytes (16 KiB), in chains of at most ``max_chain``
      (10) deltas. The manager keeps the last state in memory to diff against.
    - ``state_type``: the type ``load()`` structures states into (cattrs).
    - ``fence``: ``(lock key, token)`` passed to every ``put``.
    """

    def __init__(
        self,
        store: Any,
        namespace: str,
        *,
        compression: str | None = "zstd",
        level: int = 3,
        threads: int | None = None,
        encryption: Any = None,
        retention: Any = None,
        deltas: bool = True,
        delta_threshold: float = 0.7,
        max_chain: int = 10,
        delta_min_size: int = 16 * 1024,
        state_type: Any = None,
        fence: tuple[str, int] | None = None,
    ) -> None:
        if compression not in ("zstd", None):
            raise CheckpointConfigError(
                f"checkpoint compression must be 'zstd' or none, got {compression!r}"
            )
        if not isinstance(delta_threshold, (int, float)) or not 0 < delta_threshold <= 1:
            raise CheckpointConfigError(
                f"delta_threshold must be a fraction above 0 and at most 1, got {delta_threshold!r}"
            )
        for name, value in (("max_chain", max_chain), ("delta_min_size", delta_min_size)):
            if not isinstance(value, int) or value < 0:
                raise CheckpointConfigError(f"{name} must be 0 or more, got {value!r}")
        self.store = store
        self.namespace = namespace
        self.compression = compression
        self._compressor: Any = None
        if compression == "zstd":
            from .compression import Compressor

            self._compressor = Compressor(level, threads)
        self.level = level
        self.cipher: Any = None
        if encryption is not None:
            from .crypto import Cipher

            self.cipher = Cipher.from_options(encryption)
        self.retention = Retention.from_options(retention)
        self.deltas = bool(deltas)
        self.delta_threshold = float(delta_threshold)
        self.max_chain = max_chain
        self.delta_min_size = delta_min_size
        self.state_type = state_type
        self.fence = fence
        self.index_problem: str | None = None
        """Set when the stored index failed its checks and was rebuilt from
        the blobs' headers (``verify`` reports it)."""
        self._lock = threading.RLock()
        self._index: Index | None = None
        self._index_raw: bytes | None = None
        self._cache: _Cache | None = None
        self._swept = False

    def __repr__(self) -> str:
        return f"CheckpointManager({self.namespace!r})"

    # -- the namespace lock --------------------------------------------------

    def _namespace_lock(self, *, shared: bool = False) -> AbstractContextManager[None]:
        """The store's ``namespace_lock(namespace, shared=...)`` when it has
        one; a store without one relies on its callers to write one at a time
        (the runner does: it holds the stage's lock)."""
        hook = getattr(self.store, "namespace_lock", None)
        return nullcontext() if hook is None else hook(self.namespace, shared=shared)

    # -- the index -----------------------------------------------------------

    def _read_index(self) -> Index:
        raw = self.store.get(self.namespace, INDEX_ID)
        if raw is None:
            self._index, self._index_raw, self.index_problem = Index(self.namespace), None, None
            return self._index
        if self._index is not None and raw == self._index_raw:
            return self._index
        try:
            index = Index.from_bytes(raw, self.namespace)
            self.index_problem = None
        except CheckpointCorrupted as exc:
            self.index_problem = str(exc)
            log.warning("%s; rebuilding it from the checkpoints' own headers", exc)
            index = self._rebuild_index()
        self._index, self._index_raw = index, raw
        return index

    def _write_index(self, index: Index) -> None:
        raw = index.to_bytes()
        self.store.put(self.namespace, INDEX_ID, raw, fence=self.fence)
        self._index, self._index_raw, self.index_problem = index, raw, None

    def _rebuild_index(self) -> Index:
        """An index made from the headers of the blobs that verify."""
        entries: list[CheckpointInfo] = []
        top = 0
        for sid in self.store.list(self.namespace):
            n = blob_number(sid)
            if n is None:
                continue
            top = max(top, n)
            raw = self.store.get(self.namespace, sid)
            if raw is None:
                continue
            try:
                header, payload = fmt.unpack(raw, f"blob {sid}")
                fmt.check_payload(header, payload, f"blob {sid}", None, None)
                entries.append(
                    CheckpointInfo.from_entry(
                        {**header, "blob": sid, "stored_size": len(raw)}, self.namespace
                    )
                )
            except (CheckpointError, KeyError, TypeError, ValueError) as exc:
                log.warning(
                    "checkpoint blob %s of %r is left out of the index: %s",
                    sid,
                    self.namespace,
                    exc,
                )
        newest = {e.id: e.seq for e in sorted(entries, key=lambda e: e.seq)}
        final = [e if newest[e.id] == e.seq else attrs.evolve(e, hidden=True) for e in entries]
        top = max([top, *newest.values()])
        return Index(self.namespace, top + 1, final)

    # -- reading blobs -------------------------------------------------------

    def _what(self, e: CheckpointInfo) -> str:
        return f"checkpoint {e.id!r} of {self.namespace!r}"

    def _blob(self, e: CheckpointInfo) -> tuple[dict[str, Any], memoryview]:
        """The verified header and stored payload of ``e``'s blob."""
        what = self._what(e)
        raw = self.store.get(self.namespace, e.blob)
        if raw is None:
            raise CheckpointCorrupted(f"{what} is damaged: its blob {e.blob} is missing", e.id)
        header, payload = fmt.unpack(raw, what, e.id)
        for key, want in (
            ("seq", e.seq),
            ("kind", e.kind),
            ("base_seq", e.base_seq),
            ("codec", e.codec),
            ("compression", e.compression),
            ("key_id", e.key_id),
            ("size", e.size),
        ):
            if header.get(key) != want:
                raise CheckpointCorrupted(
                    f"{what} is damaged: its header says {key}={header.get(key)!r}, "
                    f"the index says {want!r}",
                    e.id,
                )
        fmt.check_payload(header, payload, what, e.id, e.sha256)
        return header, payload

    def _payload(self, e: CheckpointInfo) -> bytes:
        """The decrypted, decompressed payload of ``e``."""
        header, payload = self._blob(e)
        what = self._what(e)
        data: bytes | memoryview = payload
        if e.key_id is not None:
            from .crypto import decrypt

            aad = _aad(e.seq, e.kind, e.base_seq, e.codec, e.compression)
            data = decrypt(self.cipher, header, payload, aad, what, e.id)
        if e.compression == "zstd":
            from .compression import decompress

            return decompress(data, e.size, what, e.id)
        if e.compression is not None:
            raise CheckpointCorrupted(f"{what}: unknown compression {e.compression!r}", e.id)
        out = bytes(data)
        if len(out) != e.size:
            raise CheckpointCorrupted(
                f"{what} is damaged: {len(out)} bytes, expected {e.size}", e.id
            )
        return out

    def _chain_payloads(self, index: Index, e: CheckpointInfo) -> list[bytes]:
        """Payloads of ``e``'s chain, its full base first."""
        chain = index.chain(e)
        payloads = []
        for link in reversed(chain):
            try:
                payloads.append(self._payload(link))
            except CheckpointCorrupted as exc:
                if link is e:
                    raise
                raise CheckpointCorrupted(
                    f"{self._what(e)} cannot be rebuilt: its delta base {link.id!r} is "
                    f"damaged ({exc})",
                    e.id,
                ) from exc
        return payloads

    def _state_of(self, index: Index, e: CheckpointInfo) -> tuple[Any, list[bytes]]:
        payloads = self._chain_payloads(index, e)
        if e.codec == codec.BYTES:
            return payloads[-1], payloads
        if e.codec != codec.JSON:
            raise CheckpointCorrupted(f"{self._what(e)}: unknown codec {e.codec!r}", e.id)
        try:
            return _materialize(payloads), payloads
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise CheckpointCorrupted(
                f"{self._what(e)} cannot be rebuilt: {type(exc).__name__}: {exc}", e.id
            ) from exc

    # -- saving --------------------------------------------------------------

    def save(
        self,
        state: Any,
        *,
        id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        full: bool = False,
    ) -> CheckpointInfo:
        """Store ``state`` (JSON-shaped, an attrs instance, or bytes) as a
        new checkpoint, a delta against the previous one when that pays, then
        apply the retention policy. ``id`` defaults to the sequence number;
        saving an existing id replaces that checkpoint. ``full`` forces a
        full checkpoint."""
        meta = dict(metadata or {})
        if id is not None and (not isinstance(id, str) or not _ID_RE.match(id) or id == LATEST):
            raise CheckpointConfigError(
                f"checkpoint id {id!r}: use 1-128 letters, digits and _.:- (starting with a "
                f"letter or digit), not {LATEST!r}"
            )
        codec.dumps(meta, "the checkpoint metadata")  # refused before anything is written
        with self._lock, self._namespace_lock():
            index = self._read_index().copy()
            if not self._swept:
                self._sweep(index)
            return self._save(index, state, id, meta, full)

    def _save(
        self, index: Index, state: Any, id: str | None, meta: dict[str, Any], full: bool
    ) -> CheckpointInfo:
        n = index.next_seq
        cid = id if id is not None else f"{n:08d}"
        prev = index.latest()
        base: CheckpointInfo | None = None
        base_obj: Any = None
        ops_payload: bytes | None = None
        tname: str | None = None
        keys: tuple[str, ...] = ()
        n_keys: int | None = None
        if isinstance(state, (bytes, bytearray, memoryview)):
            codec_name, payload = codec.BYTES, bytes(state)
        else:
            codec_name = codec.JSON
            tname = codec.type_name(state)
            value = codec.to_jsonable(state)
            if type(value) is dict:
                n_keys = len(value)
                if self.cipher is None:  # key names may be secrets too
                    keys = tuple(k for k in itertools.islice(value, MAX_KEYS) if type(k) is str)
            payload, base, base_obj, ops_payload = self._encode(
                index, prev, value, tname is not None, full
            )
        size = len(payload)
        entry = CheckpointInfo(
            id=cid,
            seq=n,
            time=time.time(),
            kind="delta" if base is not None else "full",
            size=size,
            stored_size=0,
            sha256="",
            codec=codec_name,
            compression=None,
            level=None,
            key_id=None,
            base_seq=base.seq if base is not None else None,
            base=base.id if base is not None else None,
            chain=base.chain + 1 if base is not None else 0,
            full_size=base.full_size if base is not None else size,
            keys=keys,
            n_keys=n_keys,
            metadata=meta,
            type=tname,
            blob=blob_id(n),
            namespace=self.namespace,
        )
        entry = self._write_blob(entry, payload)
        old = index.find(cid)
        if old is not None:
            index.entries[old.seq] = attrs.evolve(old, hidden=True)
        index.entries[n] = entry
        index.next_seq = n + 1
        gone = [
            index.entries.pop(s)
            for s in sorted(doomed(index.entries.values(), self.retention, entry.time))
        ]
        self._write_index(index)
        self._delete_blobs(e.blob for e in gone)

        if not self.deltas or codec_name != codec.JSON:
            self._cache = None
        elif base_obj is not None and ops_payload is not None:
            with codec.gc_paused():
                new_obj = delta.apply(base_obj, codec.loads(ops_payload))
            self._cache = _Cache(n, entry.sha256, None, new_obj)
        else:
            self._cache = _Cache(n, entry.sha256, [payload])
        return entry

    def _encode(
        self, index: Index, prev: CheckpointInfo | None, value: Any, attrs_root: bool, full: bool
    ) -> tuple[bytes, CheckpointInfo | None, Any, bytes | None]:
        """(payload, its delta base or None, the manager's copy of ``prev``'s
        state or None, the delta from that copy or None) of a JSON state: a
        delta when it is under ``delta_threshold`` of the full size."""
        base_obj: Any = None
        ops: bytes | None = None
        if (
            not full
            and self.deltas
            and prev is not None
            and prev.codec == codec.JSON
            and prev.chain < self.max_chain
            and prev.full_size >= self.delta_min_size
        ):
            base_obj = self._base_state(index, prev)
            if base_obj is not None:
                ops = _diff(base_obj, value, attrs_root)
                if ops is not None and len(ops) < self.delta_threshold * prev.full_size:
                    return ops, prev, base_obj, ops
        payload = codec.dumps(value, attrs_root=attrs_root)
        c = self._cache
        if (
            base_obj is None
            and self.deltas
            and len(payload) >= self.delta_min_size
            and c is not None
            and c.obj is not None
            and c.holds(prev)
        ):
            # a full save (forced, or the chain is at max_chain) while the manager
            # holds the previous state as objects: keep that copy current with the
            # (small) difference, instead of parsing this whole payload at the next save
            base_obj = c.obj
            ops = _diff(base_obj, value, attrs_root)
        if ops is not None and len(ops) > len(payload) // 2:
            ops = None  # parsing the full payload later is cheaper
        return payload, None, base_obj, ops

    def _base_state(self, index: Index, prev: CheckpointInfo) -> Any:
        """The private state of ``prev`` to diff against, or None (then the
        save is full) when it cannot be rebuilt."""
        c = self._cache
        if c is None or not c.holds(prev):
            try:
                _state, payloads = self._state_of(index, prev)
            except CheckpointError as exc:
                log.warning("%s; saving a full checkpoint instead of a delta", exc)
                self._cache = None
                return None
            c = self._cache = _Cache(prev.seq, prev.sha256, None, _state)
        if c.obj is None:
            assert c.payloads is not None
            c.obj = _materialize(c.payloads)
            c.payloads = None
        return c.obj

    def _delete_blobs(self, ids: Any) -> None:
        for sid in ids:
            try:
                self.store.delete(self.namespace, sid)
            except Exception as exc:  # garbage now; prune removes it later
                log.warning(
                    "could not delete checkpoint blob %s of %r: %s", sid, self.namespace, exc
                )

    def _orphans(self, index: Index) -> _StrList:
        """Blobs no entry names, numbered below the next number handed out
        (a higher one may be a save in flight)."""
        named = {e.blob for e in index.entries.values()}
        numbered = ((sid, blob_number(sid)) for sid in self.store.list(self.namespace))
        return [
            sid for sid, n in numbered if n is not None and n < index.next_seq and sid not in named
        ]

    def _temps(self, *, dry_run: bool) -> _StrList:
        """Temp files of puts that a killed writer left in the store (removed
        unless ``dry_run``), for a store that can tell (``sweep_temps``);
        called under the namespace lock, when no put can be in flight."""
        hook = getattr(self.store, "sweep_temps", None)
        return list(hook(self.namespace, dry_run=dry_run)) if hook is not None else []

    def _sweep(self, index: Index) -> None:
        self._swept = True
        try:
            self._delete_blobs(self._orphans(index))
            temps = self._temps(dry_run=False)
        except Exception as exc:
            log.warning("could not sweep orphan checkpoint blobs of %r: %s", self.namespace, exc)
            return
        if temps:
            log.info(
                "removed %d temp file(s) that a killed writer left in %r",
                len(temps),
                self.namespace,
            )

    # -- loading -------------------------------------------------------------

    def load(self, id: str | None = None, *, type: Any = None) -> Any:
        """The state of checkpoint ``id``, or of the newest one that
        verifies when ``id`` is None (or ``"latest"``): a newer one that
        fails verification is skipped with a warning. Raises
        :class:`CheckpointNotFound` when there is none."""
        return self.load_info(id, type=type).state

    def load_info(self, id: str | None = None, *, type: Any = None) -> Loaded:
        """Like :meth:`load`, with the checkpoint's info and what was skipped."""
        with self._lock, self._namespace_lock(shared=True):
            index = self._read_index()
            skipped: list[tuple[str, str]] = []
            if id is None or id == LATEST:
                candidates = sorted(index.visible(), key=lambda e: e.seq, reverse=True)
                if not candidates:
                    raise CheckpointNotFound(f"no checkpoints in {self.namespace!r}")
                for e in candidates:
                    try:
                        state, payloads = self._state_of(index, e)
                        break
                    except CheckpointCorrupted as exc:
                        skipped.append((e.id, str(exc)))
                else:
                    raise CheckpointCorrupted(
                        f"no checkpoint of {self.namespace!r} verifies; the newest: {skipped[0][1]}",
                        candidates[0].id,
                    )
                if skipped:
                    log.warning(
                        "%s; loaded checkpoint %r instead, the newest that verifies",
                        skipped[0][1],
                        e.id,
                    )
            else:
                e = self._lookup(index, id)
                state, payloads = self._state_of(index, e)
            latest = index.latest()
            if self.deltas and e.codec == codec.JSON and latest is not None and latest.seq == e.seq:
                self._cache = _Cache(e.seq, e.sha256, payloads)
            cls = type if type is not None else self.state_type
            if cls is not None and e.codec == codec.JSON:
                state = codec.structure(state, cls)
            return Loaded(state, e, skipped)

    # -- the index, read ------------------------------------------------------

    def latest(self) -> CheckpointInfo | None:
        with self._lock:
            return self._read_index().latest()

    def info(self, id: str | None = None) -> CheckpointInfo:
        """The checkpoint ``id`` (the newest when None or ``"latest"``)."""
        with self._lock:
            return self._lookup(self._read_index(), id)

    def _lookup(self, index: Index, id: str | None) -> CheckpointInfo:
        e = index.latest() if id is None or id == LATEST else index.find(id)
        if e is None:
            what = "no checkpoints" if id in (None, LATEST) else f"no checkpoint {id!r}"
            raise CheckpointNotFound(f"{what} in {self.namespace!r}", id)
        return e

    def list(
        self,
        sort: str = "seq",
        filter: Callable[[CheckpointInfo], bool] | Mapping[str, Any] | None = None,
        *,
        hidden: bool = False,
    ) -> list[CheckpointInfo]:
        """Checkpoints sorted by ``sort`` (one of seq, id, time, size,
        stored_size, chain; a leading ``-`` for descending). ``filter`` is a
        predicate, or a mapping that the user metadata must match (equal
        values); a key ``kind``, ``codec`` or ``encrypted`` matches that field
        instead. ``hidden`` includes replaced checkpoints kept as delta bases."""
        field = sort.lstrip("-")
        if field not in _SORT_FIELDS:
            raise CheckpointConfigError(
                f"cannot sort checkpoints by {sort!r}; use one of {', '.join(_SORT_FIELDS)} "
                "(with - for descending)"
            )
        with self._lock:
            entries = list(self._read_index().entries.values())
        if not hidden:
            entries = [e for e in entries if not e.hidden]
        if filter is not None:
            pred = filter if callable(filter) else _matcher(filter)
            entries = [e for e in entries if pred(e)]
        entries.sort(key=lambda e: (getattr(e, field), e.seq), reverse=sort.startswith("-"))
        return entries

    def stats(self) -> CheckpointStats:
        with self._lock:
            entries = list(self._read_index().entries.values())
        visible = [e for e in entries if not e.hidden]
        return CheckpointStats(
            namespace=self.namespace,
            count=len(visible),
            hidden=len(entries) - len(visible),
            full=sum(1 for e in entries if e.kind == "full"),
            delta=sum(1 for e in entries if e.kind == "delta"),
            size=sum(e.size for e in entries),
            stored_size=sum(e.stored_size for e in entries),
            encrypted=sum(1 for e in entries if e.encrypted),
            max_chain=max((e.chain for e in entries), default=0),
            oldest=min((e.time for e in visible), default=None),
            newest=max((e.time for e in visible), default=None),
        )

    def verify(self, id: str | None = None) -> VerifyReport:
        """Check blobs against their headers and the index (SHA-256 of the
        stored bytes, header checksum and fields) and that every delta's
        chain of bases is whole. ``id``: that checkpoint and its bases; None:
        all, hidden ones too, and list orphan blobs and the temp files of
        puts a killed writer left. Decrypts nothing."""
        with self._lock, self._namespace_lock(shared=True):
            index = self._read_index()
            targets = list(index.entries.values()) if id is None else [self._lookup(index, id)]
            bad: dict[int, str] = {}
            checked: set[int] = set()

            def check(e: CheckpointInfo) -> None:
                if e.seq in checked:
                    return
                checked.add(e.seq)
                try:
                    self._blob(e)
                except CheckpointError as exc:
                    bad[e.seq] = str(exc)

            items = []
            for e in targets:
                check(e)
                problem = bad.get(e.seq)
                if problem is None:
                    try:
                        chain = index.chain(e)
                    except CheckpointCorrupted as exc:
                        problem = str(exc)
                    else:
                        for link in chain[1:]:
                            check(link)
                            if link.seq in bad:
                                problem = f"its delta base {link.id!r} is damaged: {bad[link.seq]}"
                                break
                items.append(VerifyItem(e.id, e.seq, problem is None, problem, e.hidden))
            orphans = self._orphans(index) if id is None else []
            temps = self._temps(dry_run=True) if id is None else []
            return VerifyReport(self.namespace, items, self.index_problem, orphans, temps)

    # -- deleting ------------------------------------------------------------

    def delete(self, id: str) -> _StrList:
        """Delete checkpoint ``id``. Deltas based on it are rebased first
        (rewritten as full checkpoints), so they stay loadable; a dependent
        that cannot be rebuilt (its chain is damaged) is deleted too. Returns
        the ids deleted."""
        with self._lock, self._namespace_lock():
            index = self._read_index().copy()
            e = index.find(id)
            if e is None:
                raise CheckpointNotFound(f"no checkpoint {id!r} in {self.namespace!r}", id)
            seqs = {e.seq}
            old_blobs: list[str] = []
            pending = [e.seq]
            while pending:
                for dep in index.dependents(pending.pop(0)):
                    if dep.seq in seqs:
                        continue
                    try:
                        rebased = self._rebase(index, dep)
                    except CheckpointError as exc:
                        log.warning("%s; deleting it too", exc)
                        seqs.add(dep.seq)
                        pending.append(dep.seq)
                        continue
                    old_blobs.append(dep.blob)
                    index.entries[dep.seq] = rebased
            gone = [index.entries.pop(s) for s in sorted(seqs) if s in index.entries]
            for s in sorted(doomed(index.entries.values(), KEEP_ALL, time.time())):
                gone.append(index.entries.pop(s))
            for x in list(index.entries.values()):  # chain lengths after rebasing
                if x.base_seq is not None:
                    index.entries[x.seq] = attrs.evolve(
                        x, chain=index.entries[x.base_seq].chain + 1
                    )
            self._write_index(index)
            self._delete_blobs([*old_blobs, *(g.blob for g in gone)])
            return [g.id for g in gone if not g.hidden]

    def _rebase(self, index: Index, dep: CheckpointInfo) -> CheckpointInfo:
        """``dep`` rewritten as a full checkpoint in a new blob (same id, seq,
        time and metadata)."""
        state, _payloads = self._state_of(index, dep)
        payload = codec.dumps(state)
        n = index.next_seq
        index.next_seq = n + 1
        entry = attrs.evolve(
            dep,
            kind="full",
            base_seq=None,
            base=None,
            chain=0,
            size=len(payload),
            full_size=len(payload),
            blob=blob_id(n),
        )
        return self._write_blob(entry, payload)

    def _write_blob(self, entry: CheckpointInfo, payload: bytes) -> CheckpointInfo:
        """Store ``payload`` in ``entry``'s blob (after its header),
        compressed when that makes it smaller, then encrypted when the
        manager has a key; ``entry`` with what that stored."""
        stored, compression, key_id = payload, None, None
        if self._compressor is not None and payload:
            packed = self._compressor.compress(payload)
            if len(packed) < len(payload):
                stored, compression = packed, "zstd"
        if self.cipher is not None:
            aad = _aad(entry.seq, entry.kind, entry.base_seq, entry.codec, compression)
            stored, key_id = self.cipher.encrypt(stored, aad), self.cipher.key_id
        entry = attrs.evolve(
            entry,
            sha256=fmt.sha256_hex(stored),
            compression=compression,
            level=self.level if compression else None,
            key_id=key_id,
        )
        header = entry.to_entry()
        del header["stored_size"], header["hidden"]
        blob = fmt.pack(header, stored)
        self.store.put(self.namespace, entry.blob, blob, fence=self.fence)
        return attrs.evolve(entry, stored_size=len(blob))

    def prune(self, retention: Any = None, *, dry_run: bool = False) -> PruneResult:
        """Apply ``retention`` (default: the manager's policy) and remove
        orphan blobs and temp files a killed writer left. Never deletes the newest checkpoint or a base that a
        kept delta needs."""
        policy = self.retention if retention is None else Retention.from_options(retention)
        with self._lock, self._namespace_lock(shared=dry_run):
            index = self._read_index().copy()
            seqs = doomed(index.entries.values(), policy, time.time())
            orphans = self._orphans(index)
            temps = self._temps(dry_run=dry_run)
            gone = [index.entries[s] for s in sorted(seqs)]
            if not dry_run:
                for s in seqs:
                    index.entries.pop(s)
                if seqs or self.index_problem:
                    self._write_index(index)
                self._delete_blobs([*(g.blob for g in gone), *orphans])
            deleted = [g for g in gone if not g.hidden]
            return PruneResult(self.namespace, deleted, orphans, dry_run, temps)

    def clear(self) -> None:
        """Delete every checkpoint of the namespace (the index first)."""
        with self._lock, self._namespace_lock():
            ids = self.store.list(self.namespace)
            if INDEX_ID in ids:
                self.store.delete(self.namespace, INDEX_ID)
            self._delete_blobs(sid for sid in ids if blob_number(sid) is not None)
            self._index, self._index_raw, self._cache, self.index_problem = None, None, None, None


def _matcher(spec: Mapping[str, Any]) -> Callable[[CheckpointInfo], bool]:
    fields = {"kind", "codec", "encrypted", "id"}
    absent = object()

    def pred(e: CheckpointInfo) -> bool:
        return all(
            (getattr(e, k) if k in fields else e.metadata.get(k, absent)) == v
            for k, v in spec.items()
        )

    return pred
