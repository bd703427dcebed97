"""@pipekit.idempotent on plain and async functions."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import enum
import logging
import threading
import time
import uuid
from decimal import Decimal
from pathlib import Path, PurePosixPath
from typing import Any, Literal, NamedTuple, Optional

import attrs
import pipekit
import pytest
from pipekit import (
    IdempotencyConflict,
    IdempotencyFailed,
    IdempotencyInProgress,
    IdempotencyManager,
    NonRetryable,
)


class Tier(enum.Enum):
    FREE = "free"
    PRO = "pro"


@attrs.define
class Receipt:
    id: str
    amount: Decimal
    at: dt.datetime
    tier: Tier
    tags: frozenset[str]
    lines: list[tuple[str, int]]
    refund: Receipt | None = None


@dataclasses.dataclass
class Report:
    path: PurePosixPath
    day: dt.date
    size: int
    raw: bytes
    by_id: dict[uuid.UUID, float]


class Pair(NamedTuple):
    a: int
    b: str


class Calls:
    def __init__(self) -> None:
        self.n = 0
        self.args: list[Any] = []
        self.lock = threading.Lock()

    def __call__(self, *args: Any) -> None:
        with self.lock:
            self.n += 1
            self.args.append(args)


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "idem"


def test_runs_once_and_replays_the_result(store: Path) -> None:
    calls = Calls()

    @pipekit.idempotent(store=store)
    def add(a: int, b: int = 2) -> dict[str, int]:
        calls(a, b)
        return {"sum": a + b}

    assert add(1) == {"sum": 3}
    assert add(1, 2) == add(a=1) == add(b=2, a=1) == {"sum": 3}  # bound, defaults applied
    assert calls.n == 1
    assert add(2) == {"sum": 4} and calls.n == 2


def test_without_parentheses(store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPEKIT_IDEMPOTENCY_DIR", str(store))
    calls = Calls()

    @pipekit.idempotent
    def double(x: int) -> int:
        calls(x)
        return 2 * x

    assert double(4) == double(4) == 8 and calls.n == 1
    keys = [s.key for s in IdempotencyManager(store).list()]
    assert keys == [f"{double.__module__}.{double.__qualname__}:{keys[0].rpartition(':')[2]}"]


def test_the_default_store_is_dot_pipekit_in_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PIPEKIT_IDEMPOTENCY_DIR", raising=False)
    monkeypatch.chdir(tmp_path)

    @pipekit.idempotent
    def one() -> int:
        return 1

    one()
    assert len(list((tmp_path / ".pipekit" / "idempotency").glob("*/*.json"))) == 1


@pytest.mark.parametrize(
    ("tp", "value"),
    [
        (
            Receipt,
            Receipt(
                "r1",
                Decimal("9.90"),
                dt.datetime(2024, 5, 1, 12, tzinfo=dt.UTC),
                Tier.PRO,
                frozenset({"a", "b"}),
                [("x", 1)],
                Receipt(
                    "r0",
                    Decimal("1"),
                    dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
                    Tier.FREE,
                    frozenset(),
                    [],
                ),
            ),
        ),
        (
            Report,
            Report(
                PurePosixPath("/a/b"), dt.date(2024, 1, 2), 3, b"\x00\xff", {uuid.UUID(int=1): 0.5}
            ),
        ),
        (tuple[int, str, float], (1, "a", float("inf"))),
        (set[int], {3, 1, 2}),
        (dict[int, list[Path]], {1: [Path("x")]}),
        (Optional[int], None),  # noqa: UP045
        (int | str, "s"),
        (Literal["a", "b"], "b"),
        (Pair, Pair(1, "x")),
        (dt.timedelta, dt.timedelta(days=2, microseconds=3)),
        (None, None),
        (list[Receipt], []),
    ],
    ids=lambda v: getattr(v, "__name__", None) or str(v)[:20],
)
def test_results_come_back_as_their_type(store: Path, tp: Any, value: Any) -> None:
    calls = Calls()

    @pipekit.idempotent(store=store, result_type=tp)
    def make(i: int) -> Any:
        calls(i)
        return value

    first = make(1)
    replayed = make(1)
    assert calls.n == 1
    assert first == value and replayed == value and type(replayed) is type(value)


def test_a_result_type_with_no_json_form_fails_at_decoration(store: Path) -> None:
    class Opaque:
        pass

    with pytest.raises(TypeError, match=r"result type .*Opaque cannot be stored as JSON"):

        @pipekit.idempotent(store=store)
        def f() -> Opaque:
            return Opaque()

    with pytest.raises(TypeError, match=r"dict\[tuple\[int, int\], str\]"):

        @pipekit.idempotent(store=store)
        def g() -> dict[tuple[int, int], str]:
            return {}

    with pytest.raises(TypeError, match="could not be told apart"):

        @pipekit.idempotent(store=store)
        def h() -> int | Receipt:
            return 1


def test_a_late_bound_result_type_is_checked_before_the_first_run(store: Path) -> None:
    calls = Calls()

    @pipekit.idempotent(store=store)
    def f() -> LaterUnstorable:  # type: ignore[name-defined]  # noqa: F821
        calls()

    globals()["LaterUnstorable"] = threading.Lock
    try:
        with pytest.raises(TypeError, match="cannot be stored"):
            f()
        assert calls.n == 0  # refused before running
        assert list(IdempotencyManager(store).list()) == []
    finally:
        del globals()["LaterUnstorable"]


def test_a_missing_return_annotation_is_an_error_unless_result_type_is_given(store: Path) -> None:
    with pytest.raises(TypeError, match="has no return annotation"):

        @pipekit.idempotent(store=store)
        def f(x):  # type: ignore[no-untyped-def]
            return x

    @pipekit.idempotent(store=store, result_type=Any)
    def g(x):  # type: ignore[no-untyped-def]
        return {"x": [x, (1, 2)]}

    assert g(1) == {"x": [1, (1, 2)]}
    assert g(1) == {"x": [1, [1, 2]]}  # Any: plain JSON comes back


def test_a_result_that_does_not_match_its_type_is_a_replayed_type_error(store: Path) -> None:
    calls = Calls()

    @pipekit.idempotent(store=store)
    def f() -> int:
        calls()
        return "not an int"  # type: ignore[return-value]

    with pytest.raises(TypeError, match="does not read back as the declared int"):
        f()
    with pytest.raises(IdempotencyFailed, match="TypeError"):
        f()
    assert calls.n == 1  # the body (and its side effects) did not run again


def test_an_argument_without_canonical_form_is_refused_before_running(store: Path) -> None:
    calls = Calls()

    @pipekit.idempotent(store=store)
    def f(x: Any) -> None:
        calls(x)

    with pytest.raises(
        TypeError, match=r"arguments of .*f\['x'\]: type _thread.lock has no canonical"
    ):
        f(threading.Lock())
    with pytest.raises(TypeError, match="timezone-aware"):
        f(dt.datetime(2024, 1, 1))
    assert calls.n == 0


def test_ignore_leaves_arguments_out(store: Path) -> None:
    calls = Calls()

    class Client:
        pass

    @pipekit.idempotent(store=store, ignore=("client",))
    def send(client: Client, to: str) -> str:
        calls(to)
        return f"sent to {to}"

    assert send(Client(), "a") == send(Client(), "a") and calls.n == 1
    with pytest.raises(TypeError, match="no argument 'nope'"):
        pipekit.idempotent(store=store, ignore=("nope",))(send.__wrapped__)


def test_key_by_argument_names_conflicts_on_other_arguments(store: Path) -> None:
    calls = Calls()

    @pipekit.idempotent(store=store, key="order_id")
    def charge(order_id: str, amount: int) -> str:
        calls(order_id, amount)
        return f"ch_{order_id}"

    assert charge("o1", 5) == charge("o1", 5) == "ch_o1"
    with pytest.raises(IdempotencyConflict):
        charge("o1", 6)
    assert charge("o2", 6) == "ch_o2"
    assert calls.n == 2


def test_a_custom_key_is_used_as_given(store: Path) -> None:
    @pipekit.idempotent(store=store, key=lambda order, amount: f"charge-{order}")
    def charge(order: str, amount: int) -> int:
        return amount

    assert charge("o1", 5) == 5
    assert [s.key for s in IdempotencyManager(store).list()] == ["charge-o1"]
    with pytest.raises(IdempotencyConflict):
        charge("o1", 7)

    @pipekit.idempotent(store=store, key=lambda x: 3)
    def bad(x: int) -> int:
        return x

    with pytest.raises(TypeError, match="must return a non-empty str"):
        bad(1)


def test_context_is_part_of_the_key(store: Path) -> None:
    tenant = {"name": "acme"}
    calls = Calls()

    @pipekit.idempotent(store=store, context=lambda: {"tenant": tenant["name"]})
    def f(x: int) -> int:
        calls(tenant["name"], x)
        return x

    f(1)
    f(1)
    tenant["name"] = "other"
    f(1)
    assert calls.args == [("acme", 1), ("other", 1)]

    @pipekit.idempotent(store=store, context={"user": 1}, operation="tests.g")
    def g(x: int) -> int:
        return x

    @pipekit.idempotent(store=store, context={"user": 2}, operation="tests.g")
    def g2(x: int) -> int:
        return x

    g(1)
    g2(1)
    assert len([s for s in IdempotencyManager(store).list("tests.g:")]) == 2


def test_failures_are_replayed_until_failed_ttl(store: Path) -> None:
    calls = Calls()

    @pipekit.idempotent(store=store, failed_ttl=0.5)
    def f(x: int) -> int:
        calls(x)
        raise ValueError(f"bad {x}")

    with pytest.raises(ValueError, match="bad 1"):
        f(1)
    with pytest.raises(IdempotencyFailed) as err:
        f(1)
    assert (err.value.error_type, err.value.error_message) == ("ValueError", "bad 1")
    assert calls.n == 1
    time.sleep(0.55)
    with pytest.raises(ValueError):
        f(1)
    assert calls.n == 2


def test_retryable_failures_are_not_replayed(store: Path) -> None:
    calls = Calls()

    class Permanent(NonRetryable, ConnectionError):
        pass

    @pipekit.idempotent(store=store)
    def f(kind: str) -> int:
        calls(kind)
        if kind == "transient":
            raise ConnectionError("reset")
        if kind == "permanent":
            raise Permanent("gone for good")
        raise LookupError("custom")

    for _ in range(2):
        with pytest.raises(ConnectionError):
            f("transient")
    assert calls.n == 2
    with pytest.raises(Permanent):
        f("permanent")
    with pytest.raises(IdempotencyFailed, match="Permanent"):
        f("permanent")

    @pipekit.idempotent(store=store, retryable=lambda exc: isinstance(exc, LookupError))
    def g(kind: str) -> int:
        calls(kind)
        raise LookupError("custom")

    for _ in range(2):
        with pytest.raises(LookupError):
            g("x")
    assert calls.n == 5


def test_an_interrupted_call_releases_its_claim(store: Path) -> None:
    calls = Calls()

    @pipekit.idempotent(store=store)
    def f() -> int:
        calls()
        if calls.n == 1:
            raise KeyboardInterrupt
        return 1

    with pytest.raises(KeyboardInterrupt):
        f()
    assert f() == 1 and calls.n == 2


def test_threads_calling_one_key_run_it_once(store: Path) -> None:
    calls = Calls()

    @pipekit.idempotent(store=store)
    def slow(x: int) -> str:
        calls(x)
        time.sleep(0.2)
        return f"result {x}"

    results: list[str] = []
    barrier = threading.Barrier(8)

    def call() -> None:
        barrier.wait()
        results.append(slow(7))

    threads = [threading.Thread(target=call) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls.n == 1 and results == ["result 7"] * 8


def test_wait_zero_raises_in_progress(store: Path) -> None:
    started = threading.Event()
    finish = threading.Event()

    @pipekit.idempotent(store=store, wait=0)
    def slow() -> int:
        started.set()
        finish.wait(10)
        return 1

    t = threading.Thread(target=slow)
    t.start()
    started.wait(10)
    try:
        with pytest.raises(IdempotencyInProgress, match="in progress"):
            slow()
    finally:
        finish.set()
        t.join()
    assert slow() == 1


def test_a_late_finisher_keeps_its_own_result_and_logs(
    store: Path, caplog: pytest.LogCaptureFixture
) -> None:
    release = threading.Event()
    started = threading.Event()

    @pipekit.idempotent(store=store, pending_timeout=0.3, wait=0)
    def work(tag: str = "x") -> str:
        if not started.is_set():
            started.set()
            release.wait(10)
            return "slow one"
        return "fast one"

    out: list[str] = []
    t = threading.Thread(target=lambda: out.append(work()))
    t.start()
    started.wait(10)
    time.sleep(0.35)
    assert work() == "fast one"  # took the stale claim over
    with caplog.at_level(logging.WARNING, logger="pipekit.idempotency"):
        release.set()
        t.join()
    assert out == ["slow one"]
    assert "taken over" in caplog.text
    assert work() == "fast one"  # the newer result stays


# -- async ------------------------------------------------------------------------


def test_async_functions(store: Path) -> None:
    calls = Calls()

    @pipekit.idempotent(store=store)
    async def fetch(x: int) -> list[int]:
        calls(x)
        await asyncio.sleep(0.1)
        return [x, x]

    async def main() -> list[list[int]]:
        return await asyncio.gather(*(fetch(3) for _ in range(5)))

    assert asyncio.run(main()) == [[3, 3]] * 5
    assert asyncio.run(fetch(3)) == [3, 3]
    assert calls.n == 1


def test_async_failures_and_cancellation(store: Path) -> None:
    calls = Calls()

    @pipekit.idempotent(store=store)
    async def f(kind: str) -> int:
        calls(kind)
        if kind == "fail":
            raise ValueError("no")
        await asyncio.sleep(10 if calls.n == 2 else 0)
        return 1

    with pytest.raises(ValueError):
        asyncio.run(f("fail"))
    with pytest.raises(IdempotencyFailed):
        asyncio.run(f("fail"))

    async def cancel_then_retry() -> int:
        task = asyncio.create_task(f("slow"))
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return await f("slow")  # the cancelled claim was released: runs now

    assert asyncio.run(cancel_then_retry()) == 1
    assert calls.n == 3


def test_the_spec_is_reachable(store: Path) -> None:
    @pipekit.idempotent(store=store, ttl=5)
    def f() -> None:
        return None

    assert f.idempotency.manager.ttl == 5  # type: ignore[attr-defined]
    assert f.__name__ == "f"
