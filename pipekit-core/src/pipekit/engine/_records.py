"""The record loop of a ``RecordStage``: read records, call ``process``,
append what it yields to the stage's partial output, checkpoint, retry
failed records and dead-letter the ones that keep failing.

Records are decoded as :class:`pipekit.RecordStage` says (``lines``: UTF-8
with ``surrogateescape``, nothing lost on bad input; ``jsonl``: JSON values,
blank lines skipped).

Exactly once, whatever instant the process dies at: the output is appended
to a partial file with a stable name (:func:`partial_path_for`), and a
checkpoint is saved only after the partial is durable up to the length it
records (fsync, then the checkpoint store's atomic put). A resumed execution
truncates the partial to that length (records written after the checkpoint
are dropped) and seeks each input to the recorded byte offset. Each
checkpoint also records the SHA-256 of the output it covers: a resume
verifies the partial's prefix against it, and starts over (saying why) when
it does not match, or when the partial is not a regular file of this user's
with one name (a symlink or hard link planted there is never written
through; a fresh partial is created with ``O_EXCL|O_NOFOLLOW``). Dead letters
are keyed by their position and written durably before any checkpoint past
them; a resumed execution first deletes the dead letters at or after its
starting position, which it is about to process again.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import logging
import os
import random
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from .. import _json
from .._atomic import unlink_quietly
from ..errors import NonRetryable, StageFailed, is_network_refusal
from ..plan._config import FailureLimit, RecordRetryPolicy
from ..plugins._processors import RecordStage, StageContext
from ._partial_output import PARTIAL_MARK, partial_path_for, remove_stale_partials
from ._partial_output import create_partial as _create_partial
from ._partial_output import reopen_partial as _reopen_partial
from ._partial_output import sync_output as _sync_output

__all__ = [
    "run_record_stage",
    "RecordRun",
    "Interrupted",
    "TooManyFailures",
    "partial_path_for",
    "remove_stale_partials",
    "PARTIAL_MARK",
]

log = logging.getLogger("pipekit.records")

DIGEST_KEY = "output_sha256"
"""The checkpoint field holding the SHA-256 of the partial output's first
``output_length`` bytes: a resume verifies them before going on."""
_READ = 1 << 20  # bytes per read
_MAX_BATCH = 8192  # records between looks at the clock and at cancellation, at most
_BATCH_S = 0.01
"""How long a batch of records should take: the next one is sized from the
last one's time per record (at most doubling), so a stop or a due
checkpoint waits for about the record in hand, however slow records are."""


class Interrupted(Exception):
    """The run was interrupted while this stage was in hand."""

    def __init__(self, message: str = "interrupted", info: dict[str, Any] | None = None):
        super().__init__(message)
        self.info = dict(info or {})


class TooManyFailures(StageFailed, NonRetryable):
    """More records were dead-lettered than the stage's ``max_failures``
    allows. Not retried as a whole: its records were retried one by one."""


class _StopAt(Exception):
    """Internal: the run was interrupted while record ``k`` was waiting for
    a retry; stop before it."""

    def __init__(self, k: int) -> None:
        self.k = k


@attrs.define(eq=False)
class RecordRun:
    """What the record loop needs besides the processor and the context."""

    pipeline: str
    stage: str
    fingerprint: str
    input_keys: list[str]
    checkpoint: Any = None
    """A :class:`pipekit.engine._record_checkpoint.RecordCheckpoint`, or None: no checkpoints."""
    dead_letters: Callable[[], Any] | None = None
    """Returns the dead-letter store (called on first need), or None: a
    record that keeps failing fails the stage."""
    every_records: int = 1000
    every_seconds: float = 60.0
    retry: RecordRetryPolicy = attrs.field(factory=RecordRetryPolicy)
    max_failures: FailureLimit = attrs.field(factory=lambda: FailureLimit(0, None))
    on_failed: Callable[[Any, BaseException], None] | None = None
    progress: Callable[[int, int, int], Any] | None = None
    """``progress(total_bytes, done_bytes, records)`` returns a handle with
    ``update(records, done_bytes)`` and ``close()``."""
    on_checkpoint: Callable[[], None] | None = None
    """Called once, after this execution's first checkpoint is saved."""
    output_digest: str | None = None
    """Set by the loop when the stage completes: the SHA-256 of the whole
    partial output, hashed while it was written (the commit need not read
    the output again)."""


class _Checkpointer:
    """Saves checkpoints in a thread of its own: fsync the partial output,
    then put the checkpoint. At most one is written at a time; a newer one
    submitted meanwhile replaces the one waiting (measured: saving in the
    loop's thread made 1,000,000 records with a checkpoint every 1,000 four
    times slower)."""

    def __init__(self, checkpoint: Any, fd: int, after_first: Callable[[], None] | None) -> None:
        self._cp = checkpoint
        self._fd = fd
        self._after_first = after_first
        self._cond = threading.Condition()
        self._pending: dict[str, Any] | None = None
        self._busy = self._closing = False
        self._error: BaseException | None = None
        self.saved = 0
        self.seconds = 0.0
        self._thread = threading.Thread(target=self._loop, name="pipekit-checkpoint", daemon=True)
        self._thread.start()

    def _write(self, state: dict[str, Any]) -> None:
        t0 = time.perf_counter()
        _sync_output(self._fd)
        self._cp.save(state)
        self.seconds += time.perf_counter() - t0
        self.saved += 1
        if self.saved == 1 and self._after_first is not None:
            try:
                self._after_first()
            except Exception as exc:  # a cache that is not saved costs a re-read only
                log.debug("after the first checkpoint: %s", exc)

    def submit(self, state: dict[str, Any]) -> None:
        with self._cond:
            self._raise_error()
            self._pending = state
            self._cond.notify_all()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while self._pending is None and not self._closing:
                    self._cond.wait()
                if self._pending is None:
                    return
                state, self._pending, self._busy = self._pending, None, True
            error = None
            try:
                self._write(state)
            except BaseException as exc:
                error = exc
            with self._cond:
                self._error = self._error or error
                self._busy = False
                self._cond.notify_all()

    def _raise_error(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def drain(self, *, discard: bool = False) -> None:
        """Wait until nothing is being written (dropping what waits when
        ``discard``); raise what a write raised."""
        with self._cond:
            if discard:
                self._pending = None
            while self._pending is not None or self._busy:
                self._cond.wait()
            self._raise_error()

    def save_now(self, state: dict[str, Any]) -> None:
        self.drain(discard=True)
        self._write(state)

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join()


def run_record_stage(processor: RecordStage, ctx: StageContext, run: RecordRun) -> dict[str, Any]:
    """Run a record stage into ``ctx.outputs[0]`` (its partial output);
    return its counters. Raises :class:`Interrupted` (after a checkpoint)
    when ``ctx.cancelled`` is set, :class:`TooManyFailures` when more records
    were dead-lettered than ``max_failures`` allows."""
    return _RecordLoop(processor, ctx, run).run()


class _RecordLoop:
    def __init__(self, processor: RecordStage, ctx: StageContext, run: RecordRun) -> None:
        fmt = getattr(processor, "format", "lines")
        if fmt not in ("lines", "jsonl"):
            raise NonRetryable(f"unknown record format {fmt!r} (expected 'lines' or 'jsonl')")
        self.fmt = fmt
        self.stateful = type(processor).restore_state is not RecordStage.restore_state
        self.proc = copy.copy(processor) if self.stateful else processor
        self.ctx = ctx
        self.run_ = run
        self.params = ctx.params
        self.cancel = ctx.cancelled
        self.fatal = (NonRetryable, *getattr(processor, "non_retryable", ()))
        self.c: dict[str, int] = {
            "records_in": 0,
            "records_out": 0,
            "records_failed": 0,
            "records_retried": 0,
            "records_dead_lettered": 0,
        }
        self.lines_done = 0
        self.resumed_from: int | None = None
        self.bytes_read = 0
        self._dl_store: Any = None
        self._warned_dead = False
        self._has_checkpoint = False
        self.total = 0
        self.fd = -1
        self.length = 0
        self.done_before = 0
        self.batch = 1  # until the time of a record is known
        self.next_ckpt = 0
        self.last_ckpt = 0.0
        self.t_batch = 0.0
        self.checkpointer: _Checkpointer | None = None
        self.bar: Any = None
        self.hash: Any = hashlib.sha256()
        self.process: Callable[[Any, Any], Any] = processor.iter_process

    # -- producing one record's outputs ----------------------------------------

    def _produce(self, rec: Any) -> list[Any]:
        if self.fmt == "jsonl":
            return [_json.dumps(v) for v in self.proc.iter_process(rec, self.params)]
        return list(self.proc.iter_process(rec, self.params))

    def _retryable(self, exc: BaseException) -> bool:
        return not isinstance(exc, self.fatal) and not is_network_refusal(exc)

    def _observe(self, rec: Any, exc: BaseException) -> None:
        cb = self.run_.on_failed
        if cb is not None:
            try:
                cb(rec, exc)
            except Exception as err:  # an observer never changes the outcome
                log.debug("on_record_failed observer: %s", err)

    def _failed(
        self, rec: Any, exc: BaseException, k: int, block: _Block, raw: bytes | None = None
    ) -> list[Any] | None:
        """``process`` raised for record ``k`` of ``block``: retry it under
        the record retry policy; return its outputs if a try succeeds, else
        dead-letter it and return None."""
        policy = self.run_.retry
        first = time.time()
        tries = 1
        self._observe(rec, exc)
        while tries < policy.attempts and self._retryable(exc):
            delay = min(policy.max_backoff, policy.backoff * 2 ** (tries - 1))
            delay += random.uniform(0, policy.jitter) if policy.jitter else 0.0
            if self.cancel.wait(delay):
                raise _StopAt(k)
            tries += 1
            try:
                produced = self._produce(rec)
            except Exception as again:
                exc = again
                self._observe(rec, again)
                continue
            self.c["records_failed"] += 1
            self.c["records_retried"] += 1
            return produced
        self.c["records_failed"] += 1
        self._dead_letter(rec, raw, exc, tries, first, k, block)
        return None

    def _dead_letter(
        self,
        rec: Any,
        raw: bytes | None,
        exc: BaseException,
        tries: int,
        first: float,
        k: int,
        block: _Block,
    ) -> None:
        from ..stores._protocols import DeadLetter

        run = self.run_
        index, offset, line = block.where(k)
        key = run.input_keys[index] if index < len(run.input_keys) else str(index)
        message = str(exc)
        label = f"record {line} of {key} (byte {offset})"
        if run.dead_letters is None:
            raise StageFailed(f"{label}: {type(exc).__name__}: {message}") from exc
        if raw is None:
            raw = rec.encode("utf-8", "surrogateescape") if isinstance(rec, str) else b""
        from ..isolation._namespaces import trusted  # the store is the runner's

        letter = DeadLetter(
            pipeline=run.pipeline,
            stage=run.stage,
            fingerprint=run.fingerprint,
            run_id=self.ctx.run_id,
            input=key,
            input_index=index,
            offset=offset,
            line=line,
            format=self.fmt,
            record=raw,
            error_type=type(exc).__name__,
            message=message,
            traceback="".join(traceback.format_exception(exc, chain=False)),
            attempts=tries,
            first_failed=first,
            last_failed=time.time(),
        )
        with trusted():
            if self._dl_store is None:
                self._dl_store = run.dead_letters()
            self._dl_store.add(letter)
        self.c["records_dead_lettered"] += 1
        level = logging.INFO if self._warned_dead else logging.WARNING  # one warning a run
        self._warned_dead = True
        log.log(level, "stage %s: %s dead-lettered after %d try(ies): %s: %s",
                run.stage, label, tries, type(exc).__name__, message)  # fmt: skip
        dead = self.c["records_dead_lettered"]
        self._check_limit(f"{label} failed: {type(exc).__name__}: {message}; {dead}", exc)

    def _check_limit(self, what: str | None = None, exc: BaseException | None = None) -> None:
        """Raise :class:`TooManyFailures` when ``max_failures`` is exceeded. A
        count is checked at each dead letter (``what`` names it), a fraction
        at each checkpoint and at the end (``what`` None)."""
        limit, c = self.run_.max_failures, self.c
        dead, seen = c["records_dead_lettered"], c["records_in"]
        if (what is not None) != (limit.count is not None) or not limit.exceeded(dead, seen):
            return
        raise TooManyFailures(
            f"{what or f'{dead} of {seen}'} record(s) dead-lettered, more than "
            f"{limit.describe()} allows (see `pipekit dlq list --stage {self.run_.stage}`); "
            "the stage keeps its last checkpoint and resumes from it on the next run"
        ) from exc

    # -- encoding the outputs of a batch ------------------------------------------

    def _encode_lines(self, outs: list[Any]) -> bytes:
        """Outputs of a ``lines`` processor, each followed by a newline."""
        outs.append("")
        try:
            return "\n".join(outs).encode("utf-8", "surrogateescape")
        except (TypeError, UnicodeEncodeError):
            return b"".join(self._line(value) + b"\n" for value in outs[:-1])
        finally:
            outs.pop()

    def _line(self, value: Any) -> bytes:
        """One output of a ``lines`` processor as bytes, or why it cannot be."""
        if isinstance(value, bytes):
            return value
        if not isinstance(value, str):
            raise NonRetryable(
                f"processor {self.proc.name!r} yielded {type(value).__name__} "
                f"{value!r:.60}; a 'lines' processor must yield str or bytes"
            )
        try:
            return value.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError as exc:
            raise NonRetryable(
                f"processor {self.proc.name!r} yielded a str that is not encodable as UTF-8 ({exc})"
            ) from None

    # -- starting and resuming ------------------------------------------------------

    def _load(self, sizes: list[int]) -> dict[str, Any] | None:
        cp = self.run_.checkpoint
        if cp is None:
            return None
        state = cp.load()
        if state is None:
            return None
        try:
            length = int(state["output_length"])
            index = int(state["input_index"])
            offset = int(state["offset"])
            int(state["line"])
            int(state["lines_done"])
            dict(state["counters"])
        except (KeyError, TypeError, ValueError):
            cp.discard("it lacks a field a record checkpoint needs")
            return None
        if length < 0 or not isinstance(state.get(DIGEST_KEY), str):
            cp.discard("it holds no digest of its partial output (saved by an older pipekit)")
            return None
        if not (0 <= index <= len(sizes) and (index == len(sizes) or 0 <= offset <= sizes[index])):
            cp.discard("its input position lies outside the inputs")
            return None
        return state

    def _open_output(self, out_path: Path, state: dict[str, Any] | None) -> dict[str, Any] | None:
        """Open the partial output as ``self.fd`` (``self.hash``: of what it
        keeps): reopened to resume from ``state``, which is returned; else
        (the checkpoint discarded, saying why) a fresh one, and None."""
        if state is not None:
            opened = _reopen_partial(out_path, int(state["output_length"]), state[DIGEST_KEY])
            if not isinstance(opened, str):
                self.fd, self.hash = opened
                return state
            self.run_.checkpoint.discard(opened)
        self.fd, self.hash = _create_partial(out_path), hashlib.sha256()
        return None

    def run(self) -> dict[str, Any]:
        ctx, run = self.ctx, self.run_
        out_path = ctx.outputs[0]
        sizes = [os.path.getsize(p) for p in ctx.inputs]
        self.total = sum(sizes)
        state = self._open_output(out_path, self._load(sizes))
        fd = self.fd
        self._has_checkpoint = state is not None
        try:
            index, offset, line = self._start(state)
        except BaseException:
            os.close(fd)
            raise
        generator = inspect.isgeneratorfunction(type(self.proc).process)
        self.process = (
            self.proc.process if (self.fmt == "lines" and generator) else self.proc.iter_process
        )
        self.checkpointer = (
            _Checkpointer(run.checkpoint, fd, run.on_checkpoint) if run.checkpoint else None
        )
        if run.progress is not None:
            self.bar = run.progress(self.total, sum(sizes[:index]) + offset, self.c["records_in"])
        self.next_ckpt = self.lines_done + run.every_records
        self.last_ckpt = self.t_batch = time.monotonic()
        t0 = time.perf_counter()
        ok = False
        try:
            self._loop(sizes, index, offset, line)
            ok = True
        finally:
            elapsed = time.perf_counter() - t0
            try:
                if self.checkpointer is not None:
                    try:
                        self.checkpointer.drain(discard=ok)
                    finally:
                        self.checkpointer.close()
            finally:
                os.close(fd)
                if ok:
                    run.output_digest = self.hash.hexdigest()
                if self.bar is not None:
                    self.bar.close()
                if not ok and not self._has_checkpoint:
                    unlink_quietly(out_path)  # nothing can resume from it
                ctx.info.update(self.counters(elapsed))
        dead = self.c["records_dead_lettered"]
        if dead:
            log.warning(
                "stage %s: %d record(s) in the dead-letter queue; see `pipekit dlq list --stage %s`",
                run.stage,
                dead,
                run.stage,
            )
        return dict(ctx.info)

    def _start(self, state: dict[str, Any] | None) -> tuple[int, int, int]:
        """Take the counters, output length and processor state from
        ``state`` (None: start from the beginning), delete the dead letters
        about to be made again; return where to read from (input index,
        byte offset, line)."""
        run = self.run_
        index = offset = line = 0
        proc_state: Any = None
        if state is not None:
            index, offset, line = (int(state[k]) for k in ("input_index", "offset", "line"))
            self.lines_done = int(state["lines_done"])
            for name, value in state["counters"].items():
                if name in self.c:
                    self.c[name] = int(value)
            proc_state = state.get("processor_state")
            self.resumed_from = self.c["records_in"]
            self.length = int(state["output_length"])
            log.info(
                "stage %s: resuming from record %d (input %s, byte %d)",
                run.stage,
                self.c["records_in"],
                run.input_keys[index] if index < len(run.input_keys) else "(end)",
                offset,
            )
        if self.stateful:
            self.proc.restore_state(proc_state)
        if run.dead_letters is not None and run.fingerprint:
            from ..isolation._namespaces import trusted  # the store is the runner's

            with trusted():
                run.dead_letters().purge(
                    run.pipeline,
                    stage=run.stage,
                    fingerprint=run.fingerprint,
                    from_position=(index, offset) if state is not None else None,
                )
        return index, offset, line

    def counters(self, elapsed: float) -> dict[str, Any]:
        checkpointer = self.checkpointer
        done_now = self.c["records_in"] - (self.resumed_from or 0)
        out: dict[str, Any] = dict(self.c)
        out["resumed_from"] = self.resumed_from
        out["input_bytes_read"] = self.bytes_read
        out["records_per_s"] = round(done_now / elapsed, 1) if elapsed > 0 else 0.0
        out["checkpoints"] = checkpointer.saved if checkpointer is not None else 0
        if checkpointer is not None and checkpointer.saved:
            out["checkpoint_ms"] = round(checkpointer.seconds / checkpointer.saved * 1000, 3)
        return out

    def _state(self, index: int, offset: int, line: int, done_bytes: int) -> dict[str, Any]:
        st: dict[str, Any] = {
            "input_index": index,
            "offset": offset,
            "line": line,
            "lines_done": self.lines_done,
            "output_length": self.length,
            "counters": dict(self.c),
            "done_bytes": done_bytes,
            "total_bytes": self.total,
            "run_id": self.ctx.run_id,
            "saved_at": time.time(),
            DIGEST_KEY: self.hash.hexdigest(),
        }
        if self.stateful:
            # as it will load back: a value that would come back changed (a
            # datetime, an int key) is a CheckpointStateError that says where
            from ..checkpoints import codec

            what = f"the checkpoint_state() of processor {self.proc.name!r}"
            st["processor_state"] = codec.loads(codec.dumps(self.proc.checkpoint_state(), what))
        return st

    # -- the loop -----------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        """Append to the partial output (the checkpointer fsyncs it)."""
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view) :]
        self.length += len(data)
        self.hash.update(data)

    def _loop(self, sizes: list[int], index: int, offset: int, line: int) -> None:
        """Read the inputs from input ``index`` at byte ``offset`` (its line
        ``line``), block by block."""
        ctx = self.ctx
        self.done_before = sum(sizes[:index])
        while index < len(ctx.inputs):
            in_fd = os.open(ctx.inputs[index], os.O_RDONLY)
            try:
                if offset:
                    os.lseek(in_fd, offset, os.SEEK_SET)
                carry = b""
                while True:
                    chunk = os.read(in_fd, _READ)
                    self.bytes_read += len(chunk)
                    if chunk:
                        data = carry + chunk if carry else chunk
                        cut = data.rfind(b"\n")
                        if cut < 0:
                            carry = data
                            continue
                        block = _Block(data[:cut], True, index, offset, line, self.fmt)
                        carry = data[cut + 1 :]
                    elif carry:
                        block = _Block(carry, False, index, offset, line, self.fmt)
                        carry = b""
                    else:
                        break
                    self._block(block)
                    offset = block.end
                    line += block.n
            finally:
                os.close(in_fd)
            self.done_before += sizes[index]
            index += 1
            offset = line = 0
        self._check_limit()

    def _block(self, b: _Block) -> None:
        """Process one block of whole lines, batch by batch: after each batch
        look at the clock and at cancellation, checkpoint when one is due."""
        c = self.c
        recs = b.recs
        n = b.n
        lines_mode = self.fmt == "lines"
        process = self.process
        size = len
        params = self.params
        loads = _json.loads
        dumps = _json.dumps
        i = 0
        while i < n:
            first = i
            j = min(n, i + self.batch, i + (self.next_ckpt - self.lines_done))
            outs: list[Any] = []
            stop_at = -1
            blanks = 0
            try:
                if lines_mode:
                    ext = outs.extend
                    for k, rec in enumerate(recs[i:j], i):
                        m = size(outs)
                        try:
                            ext(process(rec, params))
                        except Exception as exc:
                            del outs[m:]
                            got = self._failed(rec, exc, k, b)
                            if got:
                                ext(got)
                else:
                    for k, raw in enumerate(recs[i:j], i):
                        try:
                            rec = loads(raw)
                        except ValueError as exc:
                            if not raw.strip():
                                blanks += 1
                                continue
                            c["records_failed"] += 1
                            self._observe(raw, exc)
                            self._dead_letter(raw, raw, exc, 1, time.time(), k, b)
                            continue
                        try:
                            got = [dumps(v) for v in process(rec, params)]
                        except Exception as exc:
                            got = self._failed(rec, exc, k, b, raw)
                            if not got:
                                continue
                        outs.extend(got)
            except _StopAt as stop:
                stop_at = j = stop.k
            c["records_in"] += (j - i) - blanks
            if outs:
                c["records_out"] += len(outs)
                if lines_mode:
                    encoded = self._encode_lines(outs)
                else:
                    outs.append(b"")
                    encoded = b"\n".join(outs)
                self._write(encoded)
            self.lines_done += j - i
            i = j
            self._after_batch(b, i, stop_at >= 0, i - first)

    def _after_batch(self, b: _Block, i: int, stopped: bool, records: int) -> None:
        """Report progress, checkpoint when due, stop when cancelled, and
        size the next batch, after records ``..i`` of block ``b``."""
        now = time.monotonic()
        if self.bar is not None:
            self.bar.update(self.c["records_in"], self.done_before + b.offset(i))
        stopping = stopped or self.cancel.is_set()
        due = self.lines_done >= self.next_ckpt or now - self.last_ckpt >= self.run_.every_seconds
        if due:
            self._check_limit()
            self.next_ckpt = self.lines_done + self.run_.every_records
            self.last_ckpt = now
        checkpointer = self.checkpointer
        if (due or stopping) and checkpointer is not None:
            offset = b.offset(i)
            state = self._state(b.index, offset, b.line + i, self.done_before + offset)
            if not stopping:
                checkpointer.submit(state)
                self._has_checkpoint = True
            elif self.lines_done or self._has_checkpoint:
                checkpointer.save_now(state)
                self._has_checkpoint = True
        if stopping:
            fraction = (self.done_before + b.offset(i)) / self.total if self.total else 1.0
            raise Interrupted(
                "interrupted",
                {"checkpoint_record": self.c["records_in"], "checkpoint_fraction": fraction},
            )
        spent = now - self.t_batch
        self.t_batch = now
        if records > 0:
            fits = int(_BATCH_S * records / spent) if spent > 0 else _MAX_BATCH
            self.batch = max(1, min(_MAX_BATCH, 2 * self.batch, fits))


class _Block:
    """Whole lines read from input ``index``, starting at byte ``base`` (its
    line ``line``); ``has_nl``: the last line ended with a newline (all but
    a file's last line do)."""

    def __init__(
        self, raw: bytes, has_nl: bool, index: int, base: int, line: int, fmt: str
    ) -> None:
        self.lines_mode = fmt == "lines"
        self.recs: list[Any] = (
            raw.decode("utf-8", "surrogateescape").split("\n")
            if self.lines_mode
            else raw.split(b"\n")
        )
        self.n = len(self.recs)
        self.raw_ascii = raw.isascii()
        self.index = index
        self.base = base
        self.line = line
        self.end = base + len(raw) + (1 if has_nl else 0)
        self._known_j = 0
        self._known_b = 0

    def offset(self, j: int) -> int:
        """Byte offset in the input where record ``j`` of this block starts
        (or where the block ends, for ``j == n``)."""
        if j >= self.n:
            return self.end
        if j < self._known_j:
            self._known_j = self._known_b = 0
        if j > self._known_j:
            part = self.recs[self._known_j : j]
            if not self.lines_mode or self.raw_ascii:
                self._known_b += sum(map(len, part))
            else:
                self._known_b += len("\n".join(part).encode("utf-8", "surrogateescape")) - (
                    len(part) - 1
                )
            self._known_j = j
        return self.base + self._known_b + j

    def where(self, k: int) -> tuple[int, int, int]:
        """(input index, byte offset, 1-based line number) of record ``k``."""
        return self.index, self.offset(k), self.line + k + 1
