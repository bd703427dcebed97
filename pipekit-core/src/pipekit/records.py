"""The record loop of a ``RecordStage``: read records, call ``process``,
write what it yields.

Records of the ``lines`` format are ``str`` lines without their newline,
decoded as UTF-8 with ``surrogateescape`` so that bytes which are not UTF-8
pass through unchanged (nothing is lost on bad input). ``jsonl`` records are
parsed JSON values; blank lines are skipped.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from . import _json
from .errors import NonRetryable, StageFailed
from .stage import RecordStage, StageContext

__all__ = ["run_record_stage", "Interrupted"]

_BATCH = 4096


class Interrupted(Exception):
    """The run was interrupted while this stage was in hand."""


def _decoder(fmt: str) -> Callable[[bytes], Any]:
    if fmt == "lines":
        return lambda raw: raw.decode("utf-8", "surrogateescape")
    if fmt == "jsonl":
        return _json.loads
    raise StageFailed(f"unknown record format {fmt!r} (expected 'lines' or 'jsonl')")


def _encoder(fmt: str) -> Callable[[Any], bytes]:
    if fmt == "lines":

        def enc(value: Any) -> bytes:
            if isinstance(value, bytes):
                return value
            if not isinstance(value, str):
                raise TypeError(
                    f"a 'lines' processor must yield str or bytes, got {type(value).__name__}"
                )
            return value.encode("utf-8", "surrogateescape")

        return enc
    return lambda value: _json.dumps(value)


def run_record_stage(
    processor: RecordStage,
    ctx: StageContext,
    *,
    cancel: threading.Event | None = None,
    on_failed: Callable[[Any, BaseException], None] | None = None,
) -> dict[str, int]:
    fmt = getattr(processor, "format", "lines")
    decode = _decoder(fmt)
    encode = _encoder(fmt)
    params = ctx.params
    process = processor.iter_process
    fatal = (NonRetryable, *tuple(getattr(processor, "non_retryable", ())))
    records_in = records_out = 0
    with open(ctx.outputs[0], "wb", buffering=1 << 20) as out:
        buf: list[bytes] = []
        for path in ctx.inputs:
            with open(path, "rb", buffering=1 << 20) as f:
                for lineno, raw in enumerate(f, 1):
                    if raw.endswith(b"\n"):
                        raw = raw[:-1]
                    if fmt == "jsonl" and not raw.strip():
                        continue
                    records_in += 1
                    record: Any = raw
                    try:
                        record = decode(raw)
                        produced = [encode(v) for v in process(record, params)]
                    except Exception as exc:
                        if on_failed is not None:
                            on_failed(record, exc)
                        where = f"record {lineno} of {path.name}: {type(exc).__name__}: {exc}"
                        if isinstance(exc, fatal):
                            raise NonRetryable(where) from exc
                        raise StageFailed(where) from exc
                    records_out += len(produced)
                    buf.extend(produced)
                    if len(buf) >= _BATCH:
                        out.write(b"\n".join(buf) + b"\n")
                        buf.clear()
                        if cancel is not None and cancel.is_set():
                            raise Interrupted()
        if buf:
            out.write(b"\n".join(buf) + b"\n")
    return {"records_in": records_in, "records_out": records_out}
