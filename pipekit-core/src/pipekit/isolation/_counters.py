"""What a network namespace counts of its traffic: the ``snmp`` and
``snmp6`` counters that say a command tried to reach beyond loopback
(``Ip:OutNoRoutes``: the namespace has no route), or was refused on
loopback, read before and after each command."""

from __future__ import annotations

import contextlib
import functools
import os
import re

__all__ = ["COUNTERS", "Counters", "counts_from", "close_fds"]

COUNTERS = {
    # "row:column" of snmp, or the name in snmp6 -> what it means
    b"Ip:OutNoRoutes": "beyond",
    b"Ip6OutNoRoutes": "beyond",
    b"Tcp:AttemptFails": "loopback",
    b"Udp:NoPorts": "loopback",
    b"Udp6NoPorts": "loopback",
}


class Counters:
    """The counters of :data:`COUNTERS` of one network namespace. A
    ``/proc/.../net`` file shows the namespace it was opened in for as long
    as it stays open, so ``snmp`` and ``snmp6`` are opened once (in or for
    the namespace) and read again without entering it (one ``pread``: 65
    us a reading, against 144 us opening them by path). Their descriptors
    go to ``keep``, which the namespace's owner closes."""

    def __init__(self, netdir: str, keep: list[int]) -> None:
        self.last: dict[str, int] | None = None  # a closing reading the next command may open with
        self.live = 0  # commands opened and not yet closed
        self.fds: dict[str, int] = {}
        for name in ("snmp", "snmp6"):
            try:
                self.fds[name] = os.open(f"{netdir}/{name}", os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                continue  # (no IPv6): read as no counters
            keep.append(self.fds[name])

    def opening(self) -> dict[str, int]:
        """The reading a command starts from: the last command's closing
        one when nothing ran in the namespace since (one reading per
        command, not two), else a new one."""
        reading = self.last if self.live == 0 and self.last is not None else self.read()
        self.last = None
        self.live += 1
        return reading

    def closing(self, left_nothing: bool) -> dict[str, int]:
        """The reading after a command ended; kept for the next command's
        opening when no other command is live and this one ``left_nothing``
        running (its process group is gone)."""
        reading = self.read()
        self.live -= 1
        if self.live == 0 and left_nothing:
            self.last = reading
        return reading

    def read(self) -> dict[str, int]:
        texts = {}
        for name, fd in self.fds.items():
            with contextlib.suppress(OSError):
                texts[name] = os.pread(fd, 1 << 16, 0)  # a few kB
        return counts_from(texts.get("snmp", b""), texts.get("snmp6", b""))


def counts_from(snmp: bytes, snmp6: bytes) -> dict[str, int]:
    """The counters of :data:`COUNTERS` in the text of a namespace's
    ``snmp`` and ``snmp6`` files; 0 for one not there."""
    out = {"beyond": 0, "loopback": 0}
    for name, kind in COUNTERS.items():
        out[kind] += _count(name, snmp, snmp6) or 0
    return out


def _count(name: bytes, snmp: bytes, snmp6: bytes) -> int | None:
    """One counter: ``Row:column`` of ``snmp`` (a line of the row's names,
    then one of their values) or a ``Name value`` line of ``snmp6``; None
    when it is not there."""
    row, _, column = name.rpartition(b":")
    found = _pattern(name).search(b"\n" + (snmp if row else snmp6))
    if found is None or not row:
        return int(found[1]) if found else None
    names, values = found[1].split(), found[2].split()
    if column not in names or len(values) != len(names):
        return None
    value = values[names.index(column)]
    return int(value) if value.isdigit() else None


@functools.cache
def _pattern(name: bytes) -> re.Pattern[bytes]:
    """What finds :func:`_count`'s counter, compiled once (anchored by a
    newline: ``^`` in multi-line mode made a search 20 times slower)."""
    row, _, column = name.rpartition(b":")
    if not row:
        return re.compile(rb"\n%s[ \t]+(\d+)" % re.escape(column))
    return re.compile(rb"\n%s: (.*)\n%s: (.*)" % (re.escape(row), re.escape(row)))


def close_fds(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)
