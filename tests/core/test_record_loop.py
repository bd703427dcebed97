"""The record loop in-process, against the real file checkpoint store and
SQLite dead-letter store: positions, resume, truncation, discards."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs
from pipekit.engine._record_checkpoint import RecordCheckpoint
from pipekit.engine._records import Interrupted, RecordRun, partial_path_for, run_record_stage
from pipekit.plan._config import RecordRetryPolicy
from pipekit.plugins._processors import RecordStage, StageContext
from pipekit.stores._file_checkpoint import FileCheckpointStore
from pipekit.stores._file_dead_letters import FileDeadLetterStore


class Upper(RecordStage):
    name = "t-upper"

    def __init__(self, stop_after: int = -1, cancel: threading.Event | None = None) -> None:
        self.stop_after = stop_after
        self.cancel = cancel
        self.seen = 0

    def process(self, record: str, params: Any) -> Any:
        self.seen += 1
        if self.seen == self.stop_after and self.cancel is not None:
            self.cancel.set()  # as a SIGINT would, while this record is in hand
        yield record.upper()


def setup(tmp_path: Path, inputs: list[bytes], every: int = 7) -> tuple[list[Path], Path, Any]:
    paths = []
    for i, data in enumerate(inputs):
        p = tmp_path / f"in{i}.txt"
        p.write_bytes(data)
        paths.append(p)
    partial = partial_path_for(tmp_path / "out.txt", "f" * 64)
    store = FileCheckpointStore(tmp_path / "checkpoints")
    return paths, partial, store


def run(
    proc: RecordStage,
    paths: list[Path],
    partial: Path,
    store: Any,
    tmp_path: Path,
    *,
    every: int = 7,
    fingerprint: str = "f" * 64,
    cancel: threading.Event | None = None,
) -> dict[str, Any]:
    ctx = StageContext(
        stage_name="s",
        run_id="r",
        inputs=paths,
        outputs=[partial],
        params=None,
        log=logging.getLogger("t"),
        cancelled=cancel or threading.Event(),
    )
    dl = FileDeadLetterStore(tmp_path / "dl.sqlite")
    rr = RecordRun(
        pipeline="p",
        stage="s",
        fingerprint=fingerprint,
        input_keys=[p.name for p in paths],
        checkpoint=RecordCheckpoint(store, "p.s", fingerprint),
        dead_letters=lambda: dl,
        every_records=every,
        retry=RecordRetryPolicy(attempts=1),
    )
    return run_record_stage(proc, ctx, rr)


def expected(inputs: list[bytes]) -> bytes:
    out = []
    for data in inputs:
        if not data:
            continue
        text = data.decode("utf-8", "surrogateescape")
        if text.endswith("\n"):
            text = text[:-1]
        out += [line.upper() + "\n" for line in text.split("\n")]
    return "".join(out).encode("utf-8", "surrogateescape")


LINE = hs.one_of(
    hs.text(alphabet=hs.characters(blacklist_characters="\n"), max_size=12).map(
        lambda t: t.encode("utf-8", "surrogatepass")
    ),
    hs.binary(max_size=8).map(lambda b: b.replace(b"\n", b"")),
)
INPUT = hs.tuples(hs.lists(LINE, max_size=40), hs.booleans()).map(
    lambda t: b"\n".join(t[0]) + (b"\n" if t[1] and t[0] else b"")
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    inputs=hs.lists(INPUT, min_size=1, max_size=3),
    stops=hs.lists(hs.integers(min_value=1, max_value=60), min_size=1, max_size=3),
    every=hs.integers(min_value=1, max_value=9),
    junk=hs.binary(min_size=1, max_size=300),
)
def test_interrupted_and_resumed_any_number_of_times_each_record_once(
    tmp_path_factory: pytest.TempPathFactory,
    inputs: list[bytes],
    stops: list[int],
    every: int,
    junk: bytes,
) -> None:
    tmp_path = tmp_path_factory.mktemp("loop")
    paths, partial, store = setup(tmp_path, inputs)
    for stop in stops:
        cancel = threading.Event()
        try:
            run(Upper(stop, cancel), paths, partial, store, tmp_path, every=every, cancel=cancel)
        except Interrupted:
            if partial.exists():
                with open(partial, "ab") as f:
                    f.write(junk)  # written after the checkpoint by a run that then died
            continue
        break
    else:
        run(Upper(), paths, partial, store, tmp_path, every=every)
    assert partial.read_bytes() == expected(inputs)


def test_what_was_written_after_the_checkpoint_is_dropped_on_resume(tmp_path: Path) -> None:
    paths, partial, store = setup(tmp_path, [b"a\nb\nc\n"])
    cancel = threading.Event()
    with pytest.raises(Interrupted):
        run(Upper(2, cancel), paths, partial, store, tmp_path, cancel=cancel)
    with open(partial, "ab") as f:
        f.write(b"WRITTEN AFTER THE CHECKPOINT\n")
    counters = run(Upper(), paths, partial, store, tmp_path)
    assert counters["resumed_from"] == 3 and counters["input_bytes_read"] == 0
    assert partial.read_bytes() == b"A\nB\nC\n"


def test_a_checkpoint_records_byte_offsets_of_non_ascii_lines(tmp_path: Path) -> None:
    data = "é\n☃☃\n\nx\r\nlast".encode() + b"\xff\n"
    paths, partial, store = setup(tmp_path, [data])
    cancel = threading.Event()
    with pytest.raises(Interrupted) as info:
        run(Upper(3, cancel), paths, partial, store, tmp_path, every=100, cancel=cancel)
    assert info.value.info["checkpoint_record"] >= 3
    state = RecordCheckpoint(store, "p.s", "f" * 64).peek()
    assert state is not None
    n = state["line"]
    assert state["offset"] == len(b"".join(x + b"\n" for x in data.split(b"\n")[:n]))
    run(Upper(), paths, partial, store, tmp_path)
    assert partial.read_bytes() == expected([data])


def test_a_checkpoint_of_another_fingerprint_or_damaged_is_discarded(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    paths, partial, store = setup(tmp_path, [b"a\nb\nc\n"])
    cancel = threading.Event()
    with pytest.raises(Interrupted):
        run(Upper(1, cancel), paths, partial, store, tmp_path, every=1, cancel=cancel)
    with caplog.at_level(logging.WARNING):
        run(Upper(), paths, partial, store, tmp_path, fingerprint="e" * 64)
    assert "saved for other inputs, params or processor version" in caplog.text
    assert store.list("p.s") == []

    cancel = threading.Event()
    with pytest.raises(Interrupted):
        run(Upper(1, cancel), paths, partial, store, tmp_path, every=1, cancel=cancel)
    blob = next(i for i in store.list("p.s") if i.startswith("b-"))
    raw = store.get("p.s", blob)
    store.put("p.s", blob, raw[:-3] + bytes(x ^ 0xFF for x in raw[-3:]))  # same length
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        run(Upper(), paths, partial, store, tmp_path)
    assert "it is damaged" in caplog.text
    assert partial.read_bytes() == b"A\nB\nC\n"


def test_a_partial_output_shorter_than_its_checkpoint_is_not_resumed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    paths, partial, store = setup(tmp_path, [b"a\nb\nc\nd\n"])
    cancel = threading.Event()
    with pytest.raises(Interrupted):
        run(Upper(2, cancel), paths, partial, store, tmp_path, every=1, cancel=cancel)
    partial.write_bytes(b"A")
    with caplog.at_level(logging.WARNING):
        counters = run(Upper(), paths, partial, store, tmp_path)
    assert "holds 1 bytes, fewer than the" in caplog.text
    assert counters["resumed_from"] is None
    assert partial.read_bytes() == b"A\nB\nC\nD\n"


def test_a_damaged_record_checkpoint_is_discarded_not_used(tmp_path: Path) -> None:
    from pipekit.stores._file_checkpoint import FileCheckpointStore

    store = FileCheckpointStore(tmp_path / "cp")
    cp = RecordCheckpoint(store, "p.s", "f" * 64)
    cp.save({"a": 1})
    assert RecordCheckpoint(store, "p.s", "f" * 64).peek() == {"a": 1}
    assert RecordCheckpoint(store, "p.s", "0" * 64).peek() is None  # another fingerprint
    blob = next(i for i in store.list("p.s") if i.startswith("b-"))
    raw = bytearray(store.get("p.s", blob))
    raw[-1] ^= 0xFF
    store.put("p.s", blob, bytes(raw))
    fresh = RecordCheckpoint(store, "p.s", "f" * 64)
    assert fresh.peek() is None
    assert fresh.load() is None  # discarded, with a warning
    assert store.list("p.s") == []


def test_a_processor_returning_a_list_or_yielding_bad_values(tmp_path: Path) -> None:
    class TwoLines(RecordStage):
        name = "two"

        def process(self, record: str, params: Any) -> Any:
            return [record, record.encode() + b"!"]

    paths, partial, store = setup(tmp_path, [b"a\nb\n"])
    run(TwoLines(), paths, partial, store, tmp_path)
    assert partial.read_bytes() == b"a\na!\nb\nb!\n"

    class Bad(RecordStage):
        name = "bad"

        def process(self, record: str, params: Any) -> Any:
            yield 42

    with pytest.raises(Exception, match="yielded int 42; a 'lines' processor must yield str"):
        run(Bad(), paths, partial, store, tmp_path)


# -- slow records: a stop or a time-based checkpoint waits about one record ------


def test_a_stop_waits_for_the_record_in_hand_not_for_a_batch(tmp_path: Path) -> None:
    """Set while record 3 is processed (as SIGINT would be), the stop comes
    right after it: not after a batch of 64 records (29 s at 0.5 s each)."""
    paths, partial, store = setup(tmp_path, [b"".join(b"r%d\n" % i for i in range(200))])
    cancel = threading.Event()
    with pytest.raises(Interrupted) as stopped:
        run(
            Upper(stop_after=3, cancel=cancel),
            paths,
            partial,
            store,
            tmp_path,
            every=10**6,
            cancel=cancel,
        )
    assert stopped.value.info["checkpoint_record"] <= 4, stopped.value.info


class _Counted(RecordCheckpoint):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.saved = threading.Event()

    def save(self, *args: Any, **kwargs: Any) -> Any:
        done = super().save(*args, **kwargs)
        self.saved.set()
        return done


class WaitsForACheckpoint(RecordStage):
    """Record 5 goes on only once a checkpoint was saved (every_seconds is
    tiny, so one is due after each record): a loop that looks at the clock
    only after 64 records never saves one, and the record says so."""

    name = "t-waits"

    def __init__(self, saved: threading.Event) -> None:
        self.saved = saved
        self.seen = 0

    def process(self, record: str, params: Any) -> Any:
        self.seen += 1
        if self.seen == 5 and not self.saved.wait(60):
            yield "NO CHECKPOINT"
        yield record


def test_a_time_based_checkpoint_comes_after_the_record_in_hand(tmp_path: Path) -> None:
    paths, partial, store = setup(tmp_path, [b"".join(b"r%d\n" % i for i in range(20))])
    checkpoint = _Counted(store, "p.s", "f" * 64)
    ctx = StageContext(
        stage_name="s", run_id="r", inputs=paths, outputs=[partial], params=None,
        log=logging.getLogger("t"), cancelled=threading.Event(),
    )  # fmt: skip
    rr = RecordRun(
        pipeline="p", stage="s", fingerprint="f" * 64, input_keys=[p.name for p in paths],
        checkpoint=checkpoint, every_records=10**6, every_seconds=1e-9,
    )  # fmt: skip
    run_record_stage(WaitsForACheckpoint(checkpoint.saved), ctx, rr)
    assert b"NO CHECKPOINT" not in partial.read_bytes()
