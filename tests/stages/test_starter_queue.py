"""The command starter's queue (``pipekit_stages._execd``), driven through
its runner-side :class:`pipekit_stages.starters.Starter`: a command asked
for ``after`` the running one starts the moment that one ends well, with
no request in between; it is not started after a failure, a kill or a
drop, and a drop is answered at once."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pipekit_stages import starters

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="starters are Linux-only"
)


class Handle:
    result: tuple[Any, ...] | None = None


@pytest.fixture
def starter(tmp_path: Path) -> Iterator[starters.Starter]:
    proc = subprocess.Popen(
        list(starters.SERVER_ARGV),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=tmp_path,
        bufsize=0,
    )
    s = starters.Starter(proc, None)
    try:
        yield s
    finally:
        s.close()


def sh(script: str) -> list[Any]:
    return [("/bin/sh", ["/bin/sh", "-c", script], [], True)]


def ask(
    s: starters.Starter,
    folder: Path,
    script: str,
    after: bool = False,
    env: Any = None,
    count: bool = False,
) -> Handle:
    h = Handle()
    h.id = s.run(
        h, str(folder), env if env is not None else dict(os.environb), sh(script), after, count
    )  # type: ignore[attr-defined]
    return h


def replied(s: starters.Starter, *handles: Handle, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while any(h.result is None for h in handles):
        left = end - time.monotonic()
        assert left > 0, "no reply in time"
        select.select([s.r], [], [], left)
        s.pump()


def test_a_command_queued_after_one_that_ends_well_starts_at_once(
    starter: starters.Starter, tmp_path: Path
) -> None:
    a = ask(starter, tmp_path, "sleep 0.3; date +%s.%N > a")
    b = ask(starter, tmp_path, "date +%s.%N > b", after=True)
    replied(starter, a, b)  # no request in between
    assert a.result is not None and b.result is not None
    assert a.result[1] == 0 and b.result[1] == 0 and b.result[0] is not None
    gap = float((tmp_path / "b").read_text()) - float((tmp_path / "a").read_text())
    assert 0 <= gap < 0.2, gap


@pytest.mark.parametrize("how", ["exit 3", "kill -9 $$"])
def test_a_command_queued_after_one_that_fails_is_not_started(
    starter: starters.Starter, tmp_path: Path, how: str
) -> None:
    a = ask(starter, tmp_path, f"sleep 0.1; {how}")
    b = ask(starter, tmp_path, "touch b", after=True)
    c = ask(starter, tmp_path, "touch c")  # not `after`: it starts whatever came before
    replied(starter, a, b, c)
    assert a.result is not None and a.result[1] != 0
    assert b.result == (None, None, 0, b"", None, None)  # not started, not an error
    assert not (tmp_path / "b").exists()
    assert c.result is not None and c.result[1] == 0 and (tmp_path / "c").exists()


@pytest.mark.parametrize("how", ["drop", "kill"])
def test_a_queued_command_taken_back_is_answered_at_once(
    starter: starters.Starter, tmp_path: Path, how: str
) -> None:
    a = ask(starter, tmp_path, "sleep 3; touch a")
    b = ask(starter, tmp_path, "touch b", after=True)
    t0 = time.monotonic()
    getattr(starter, how)(b.id)  # type: ignore[attr-defined]
    replied(starter, b, timeout=2)
    assert time.monotonic() - t0 < 1  # not after `a`'s 3 s
    assert b.result == (None, None, 0, b"", None, None)
    assert a.result is None  # still running
    starter.kill(a.id)  # type: ignore[attr-defined]
    replied(starter, a)
    assert a.result is not None and a.result[1] == -9
    assert not (tmp_path / "b").exists() and not (tmp_path / "a").exists()


def test_a_drop_of_a_running_command_leaves_it_be(
    starter: starters.Starter, tmp_path: Path
) -> None:
    a = ask(starter, tmp_path, "sleep 0.2; touch a")
    starter.drop(a.id)  # type: ignore[attr-defined]
    replied(starter, a)
    assert a.result is not None and a.result[1] == 0 and (tmp_path / "a").exists()


def test_the_environment_of_a_dropped_request_holds_for_the_next(
    starter: starters.Starter, tmp_path: Path
) -> None:
    """The runner sends an environment once while it is unchanged: one that
    came with a command that was then dropped still holds for the next."""
    first = dict(os.environb, X=b"one")
    second = dict(os.environb, X=b"two")
    a = ask(starter, tmp_path, 'sleep 0.3; echo "$X" > a', env=first)
    b = ask(starter, tmp_path, 'echo "$X" > b', after=True, env=second)
    starter.drop(b.id)  # type: ignore[attr-defined]
    c = ask(starter, tmp_path, 'echo "$X" > c', env=second)  # sent as "the same as before"
    replied(starter, a, b, c)
    assert (tmp_path / "a").read_text() == "one\n"
    assert (tmp_path / "c").read_text() == "two\n"


def test_counters_are_read_around_each_command(starter: starters.Starter, tmp_path: Path) -> None:
    """Before and after each command (here the host's counters: this
    starter lives in no namespace of its own); sent empty when unchanged."""
    from pipekit.netns import counts_from

    refused = (
        'python3 -c "import socket, time; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); '
        "s.sendto(b'x', ('127.0.0.1', 9)); time.sleep(0.1)\""
    )
    a = ask(starter, tmp_path, "true", count=True)
    b = ask(starter, tmp_path, refused, after=True, count=True)
    replied(starter, a, b)
    assert a.result is not None and b.result is not None
    assert a.result[5] is not None and b.result[5] is not None
    (b_before, b_after) = b.result[5]
    assert b"Udp:" in b_before[0] and b"Udp6" in b_before[1]
    delta = counts_from(*b_after)["loopback"] - counts_from(*b_before)["loopback"]
    assert delta >= 1  # the datagram to a closed port on loopback
    assert ask_without_count_has_none(starter, tmp_path)


def ask_without_count_has_none(s: starters.Starter, folder: Path) -> bool:
    h = ask(s, folder, "true")
    replied(s, h)
    return h.result is not None and h.result[5] is None


def test_a_starter_that_dies_fails_only_the_command_it_ran(
    starter: starters.Starter, tmp_path: Path
) -> None:
    a = ask(starter, tmp_path, "kill -9 $PPID; sleep 1")
    b = ask(starter, tmp_path, "touch b", after=True)
    replied(starter, a, b)
    assert a.result is not None and a.result[4] == "the command starter ended unexpectedly"
    assert b.result == (None, None, 0, b"", None, None)  # never started: the runner gives it back
    assert starter.broken
