"""Processors used by the test suite, loaded through PIPEKIT_PLUGIN_MODULES
(so that worker processes and CLI subprocesses find them too)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pipekit


@attrs.define
class SleepParams:
    seconds: float = 1.0
    marker: str = ""
    """Written (appended) when the sleep ends: proves the work was not stopped."""


class Sleep(pipekit.Stage):
    """Sleep, then copy input 0 to output 0 and append to a marker file."""

    name = "sleep"
    version = "1"
    Params = SleepParams

    def run(self, ctx: pipekit.StageContext) -> None:
        time.sleep(ctx.params.seconds)
        ctx.log.info("slept %ss in process %d", ctx.params.seconds, os.getpid())
        if ctx.params.marker:
            with open(ctx.params.marker, "a") as f:
                f.write(f"{ctx.stage_name} {os.getpid()}\n")
        for out in ctx.outputs:
            data = ctx.inputs[0].read_bytes() if ctx.inputs else b"slept\n"
            out.write_bytes(data)


@attrs.define
class FlakyParams:
    counter: str
    """A file counting attempts across processes."""
    fail_times: int = 1
    non_retryable: bool = False


class Flaky(pipekit.Stage):
    """Fail the first ``fail_times`` attempts, then copy input to output."""

    name = "flaky"
    version = "1"
    Params = FlakyParams

    def run(self, ctx: pipekit.StageContext) -> None:
        path = Path(ctx.params.counter)
        n = int(path.read_text()) if path.exists() else 0
        path.write_text(str(n + 1))
        with open(str(path) + ".times", "a") as f:
            f.write(f"{time.monotonic()}\n")
        if n < ctx.params.fail_times:
            if ctx.params.non_retryable:
                raise pipekit.NonRetryable(f"permanent failure {n + 1}")
            raise RuntimeError(f"transient failure {n + 1}")
        ctx.outputs[0].write_bytes(ctx.inputs[0].read_bytes())


@attrs.define
class SideEffectParams:
    log: str
    """Each execution appends one line here."""
    seconds: float = 0.0


class SideEffect(pipekit.Stage):
    """Append one line per execution to a log, then copy input 0 to each output."""

    name = "side-effect"
    version = "1"
    Params = SideEffectParams

    def run(self, ctx: pipekit.StageContext) -> None:
        with open(ctx.params.log, "a") as f:
            f.write(f"{ctx.stage_name} {os.getpid()}\n")
            f.flush()
        if ctx.params.seconds:
            time.sleep(ctx.params.seconds)
        data = b"".join(p.read_bytes() for p in ctx.inputs)
        for out in ctx.outputs:
            out.write_bytes(data)


@attrs.define
class SlowWriteParams:
    chunks: int = 200
    delay: float = 0.01
    marker: str = ""


class SlowWrite(pipekit.Stage):
    """Write the output slowly, in chunks (to be killed mid-write)."""

    name = "slow-write"
    version = "1"
    Params = SlowWriteParams

    def run(self, ctx: pipekit.StageContext) -> None:
        if ctx.params.marker:
            Path(ctx.params.marker).write_text(str(os.getpid()))
        with open(ctx.outputs[0], "wb") as f:
            for i in range(ctx.params.chunks):
                f.write(f"chunk {i:05d} ".encode() * 50 + b"\n")
                f.flush()
                time.sleep(ctx.params.delay)


class Versioned(pipekit.RecordStage):
    """Upper-case; its version comes from PIPEKIT_TEST_VERSION."""

    name = "versioned"
    version = os.environ.get("PIPEKIT_TEST_VERSION", "1")

    def process(self, record: str, params: None) -> Iterator[str]:
        yield record.upper()


class RecordBoom(pipekit.RecordStage):
    """Raises on lines containing 'boom'."""

    name = "record-boom"
    version = "1"

    def process(self, record: str, params: None) -> Iterator[str]:
        if "boom" in record:
            raise ValueError(f"cannot process {record!r}")
        yield record


@attrs.define
class FatalParams:
    calls: str
    """Each call of process() appends a line here."""


class RecordFatal(pipekit.RecordStage):
    """Raises NonRetryable on lines containing 'fatal'."""

    name = "record-fatal"
    version = "1"
    Params = FatalParams

    def process(self, record: str, params: FatalParams) -> Iterator[str]:
        with open(params.calls, "a") as f:
            f.write(record + "\n")
        if "fatal" in record:
            raise pipekit.NonRetryable("this record can never succeed")
        yield record


@attrs.define
class TaggedParams:
    tags: frozenset[str] = frozenset()


class Tagged(pipekit.RecordStage):
    """Appends the sorted tags to each line."""

    name = "tagged"
    version = "1"
    Params = TaggedParams

    def process(self, record: str, params: TaggedParams) -> Iterator[str]:
        yield record + " " + ",".join(sorted(params.tags))


@attrs.define
class ResumableParams:
    fail_first: bool = True


class Resumable(pipekit.Stage):
    """Saves a checkpoint, fails the first time, and on the next attempt
    writes what it loaded from its checkpoint."""

    name = "resumable"
    version = "1"
    Params = ResumableParams

    def run(self, ctx: pipekit.StageContext) -> None:
        assert ctx.checkpoint is not None
        loaded = ctx.checkpoint.load()
        if loaded is None:
            ctx.checkpoint.save({"done_part": 1})
            if ctx.params.fail_first:
                raise RuntimeError("crash after saving a checkpoint")
        ctx.outputs[0].write_text(f"loaded={loaded}\n")


@attrs.define
class SlowUpperParams:
    sleep_every: int = 100
    """Sleep after every N records (0: never)."""
    sleep_s: float = 0.001
    marker: str = ""
    """Written when the first record is processed: the stage is under way."""


class SlowUpper(pipekit.RecordStage):
    """Upper-case each line, sleeping now and then (to be killed mid-run)."""

    name = "slow-upper"
    version = "1"
    Params = SlowUpperParams

    def __init__(self) -> None:
        self._n = 0

    def process(self, record: str, params: SlowUpperParams) -> Iterator[str]:
        self._n += 1
        if params.marker and self._n == 1:
            Path(params.marker).write_text(str(os.getpid()))
        if params.sleep_every and self._n % params.sleep_every == 0:
            time.sleep(params.sleep_s)
        yield record.upper()


@attrs.define
class PoisonParams:
    calls: str = ""
    """Each call of process() appends the record here."""
    fail_times: int = 1000
    """How many tries of a poison record fail before one succeeds."""


class Poison(pipekit.RecordStage):
    """Fails on records containing 'poison' (unless PIPEKIT_TEST_FIXED=1);
    a record with 'transient' fails its first try only."""

    name = "poison"
    version = "1"
    Params = PoisonParams

    def __init__(self) -> None:
        self._tries: dict[str, int] = {}

    def process(self, record: str, params: PoisonParams) -> Iterator[str]:
        if params.calls:
            with open(params.calls, "a", errors="surrogateescape") as f:
                f.write(record + "\n")
        if "transient" in record:
            n = self._tries[record] = self._tries.get(record, 0) + 1
            if n == 1:
                raise ConnectionError(f"transient failure on {record!r}")
        if "poison" in record and os.environ.get("PIPEKIT_TEST_FIXED") != "1":
            raise ValueError(f"cannot digest {record!r}")
        if "fatal" in record and os.environ.get("PIPEKIT_TEST_FIXED") != "1":
            raise PermissionError(f"never worth retrying: {record!r}")
        yield f"ok {record}"

    non_retryable = (PermissionError,)


class Numbered(pipekit.RecordStage):
    """Prefixes each line with a running count: state kept through checkpoints."""

    name = "numbered"
    version = "1"

    def restore_state(self, state: Any) -> None:
        self.count = 0 if state is None else int(state["count"])

    def checkpoint_state(self) -> Any:
        return {"count": self.count}

    def process(self, record: str, params: None) -> Iterator[str]:
        self.count += 1
        if self.count % 20 == 0:
            time.sleep(0.001)
        yield f"{self.count} {record}"


class JsonTag(pipekit.RecordStage):
    """jsonl: adds {"tagged": true}; fails on objects with "bad"."""

    name = "json-tag"
    version = "1"
    format = "jsonl"

    def process(self, record: Any, params: None) -> Iterator[Any]:
        if isinstance(record, dict) and record.get("bad"):
            raise ValueError("bad record")
        yield {"value": record, "tagged": True}


class ReturnsList(pipekit.RecordStage):
    """process returns a list (not a generator): two lines per record."""

    name = "returns-list"
    version = "1"

    def process(self, record: str, params: None) -> Any:
        return [record, record.upper()]


@attrs.define
class StartedCopyParams:
    decline: bool = False
    """start() returns None: the runner calls run() instead."""
    fail_start: bool = False
    """start() raises."""
    fail_finish: bool = False
    """finish() raises."""


class _PipeDone(pipekit.Started):
    """Work that is done at once: a pipe holding one byte, then its end."""

    def __init__(self, ctx: pipekit.StageContext, fd: int, fail: bool) -> None:
        self.ctx, self.fd, self.fail, self.polls = ctx, fd, fail, 0

    def fileno(self) -> int:
        return self.fd

    def poll(self) -> bool:
        self.polls += 1
        if os.read(self.fd, 16):
            return False
        os.close(self.fd)
        return True

    def kill(self, reason: str) -> None:
        self.ctx.info["killed"] = reason

    def finish(self) -> None:
        import threading

        self.ctx.info["finished_in"] = threading.current_thread().name
        self.ctx.info["polls"] = self.polls
        if self.fail:
            raise pipekit.StageFailed("finish said no")


class StartedCopy(pipekit.Stage):
    """Copy input 0 to output 0 from start() (Stage.start); say in ctx.info
    which threads started, ran and finished it."""

    name = "started-copy"
    version = "1"
    Params = StartedCopyParams

    def run(self, ctx: pipekit.StageContext) -> None:
        import threading

        ctx.info["ran_in"] = threading.current_thread().name
        ctx.outputs[0].write_bytes(ctx.inputs[0].read_bytes())

    def start(self, ctx: pipekit.StageContext) -> pipekit.Started | None:
        import threading

        p = ctx.params
        if p.fail_start:
            raise pipekit.StageFailed("start said no")
        if p.decline:
            return None
        ctx.info["started_in"] = threading.current_thread().name
        ctx.outputs[0].write_bytes(ctx.inputs[0].read_bytes())
        r, w = os.pipe()
        os.write(w, b"x")
        os.close(w)
        return _PipeDone(ctx, r, p.fail_finish)


class SymlinkOut(pipekit.Stage):
    """Leaves a symlink to its input where its output should be: what an
    attacker who swapped the temporary output would leave for the commit."""

    name = "symlink-out"
    version = "1"

    def run(self, ctx: pipekit.StageContext) -> None:
        os.symlink(ctx.inputs[0].resolve(), ctx.outputs[0])


@pipekit.hookimpl
def register_stages(register: Callable[[Any], None]) -> None:
    for proc in (
        Sleep(),
        Flaky(),
        SideEffect(),
        SlowWrite(),
        Versioned(),
        RecordBoom(),
        RecordFatal(),
        Tagged(),
        Resumable(),
        SlowUpper(),
        Poison(),
        Numbered(),
        JsonTag(),
        ReturnsList(),
        StartedCopy(),
        SymlinkOut(),
    ):
        register(proc)
