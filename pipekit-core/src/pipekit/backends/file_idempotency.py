"""A file-sharded idempotency store: ``<root>/ab/abcdef….json`` per key.

Writes are atomic (temp + rename) and durable in batches: every file of a
batch is fsynced, then renamed, then each touched folder fsynced once.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterable
from pathlib import Path

import attrs

from .. import _json
from ..atomic import commit_files, temp_path_for
from .protocols import IdemRecord

__all__ = ["FileIdempotencyStore"]


_FIELDS = tuple(a.name for a in attrs.fields(IdemRecord))


def _as_dict(rec: IdemRecord) -> dict[str, object]:
    return {name: getattr(rec, name) for name in _FIELDS}


class FileIdempotencyStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._root = os.fspath(root)

    def path_for(self, key: str) -> Path:
        return Path(self._path_str(key))

    def _path_str(self, key: str) -> str:
        h = hashlib.sha256(key.encode()).hexdigest()
        return f"{self._root}/{h[:2]}/{h}.json"

    def get(self, key: str) -> IdemRecord | None:
        try:
            with open(self._path_str(key), "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            return None
        try:
            data = _json.loads(raw)
            record = IdemRecord(**data)
        except (ValueError, TypeError):
            return None  # unreadable: treated as absent, the work reruns
        if record.key != key:
            return None
        if record.expires is not None and record.expires <= time.time():
            return None
        return record

    def get_many(self, keys: Iterable[str]) -> dict[str, IdemRecord]:
        out = {}
        for key in keys:
            rec = self.get(key)
            if rec is not None:
                out[key] = rec
        return out

    def put_many(self, records: Iterable[IdemRecord], *, durable: bool = True) -> None:
        pairs = []
        try:
            for rec in records:
                final = self.path_for(rec.key)
                final.parent.mkdir(parents=True, exist_ok=True)
                tmp = temp_path_for(final)
                with open(tmp, "wb") as f:
                    f.write(_json.dumps(_as_dict(rec)))
                pairs.append((tmp, final))
            if durable:
                commit_files(pairs)
            else:
                for tmp, final in pairs:
                    os.replace(tmp, final)
        except BaseException:
            for tmp, _ in pairs:
                try:
                    os.unlink(tmp)
                except FileNotFoundError:
                    pass
            raise

    def delete(self, key: str) -> None:
        try:
            os.unlink(self.path_for(key))
        except FileNotFoundError:
            pass
