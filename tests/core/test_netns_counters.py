"""The namespace counters that tell whether a command tried to reach the
network are read from /proc text; the reader finds them in any order."""

from __future__ import annotations

from pipekit.netns import _COUNTERS, _close_fds, _counter, _Counters

SNMP = b"""Ip: Forwarding DefaultTTL InReceives OutNoRoutes ReasmTimeout
Ip: 1 64 7 3 0
Icmp: InMsgs InErrors
Icmp: 0 0
IcmpMsg: InType3 OutType3
IcmpMsg: 2 2
Tcp: RtoAlgorithm ActiveOpens AttemptFails EstabResets
Tcp: 1 4 5 0
Udp: InDatagrams NoPorts InErrors
Udp: 9 11 0
"""

SNMP6 = b"""Ip6InReceives                   \t4
Ip6OutNoRoutes                  \t6
Udp6NoPorts                     \t2
"""


def test_counters_are_found_by_row_and_column() -> None:
    assert _counter(SNMP, "Ip:", "OutNoRoutes") == 3
    assert _counter(SNMP, "Tcp:", "AttemptFails") == 5
    assert _counter(SNMP, "Udp:", "NoPorts") == 11
    assert _counter(SNMP, "Icmp:", "InErrors") == 0
    assert _counter(SNMP, "Udp:", "Missing") == 0
    assert _counter(SNMP, "Sctp:", "NoPorts") == 0
    assert _counter(SNMP6, None, "Ip6OutNoRoutes") == 6
    assert _counter(SNMP6, None, "Ip6InReceives") == 4  # the first line
    assert _counter(SNMP6, None, "Udp6NoPorts") == 2
    assert _counter(SNMP6, None, "Ip6") == 0
    assert _counter(b"", None, "Udp6NoPorts") == 0
    assert _counter(b"", "Ip:", "OutNoRoutes") == 0


def test_every_counter_pipekit_watches_is_in_this_kernel() -> None:
    with open("/proc/self/net/snmp", "rb") as f:
        snmp = f.read()
    with open("/proc/self/net/snmp6", "rb") as f:
        snmp6 = f.read()
    for fname, prefix, column, _kind in _COUNTERS:
        text = snmp if fname == "snmp" else snmp6
        assert column.encode() in text, column
        assert _counter(text, prefix, column) >= 0
    fds: list[int] = []
    try:
        assert set(_Counters("/proc/self/net", fds).read()) == {"beyond", "loopback"}
        assert len(fds) == 2
        assert _Counters("/nonexistent", fds).read() == {"beyond": 0, "loopback": 0}
    finally:
        _close_fds(fds)


def test_counter_files_are_read_whole_in_as_few_reads_as_they_need(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import os

    from pipekit.netns import _READ_SIZE, _pread_all

    for size in (0, 100, _READ_SIZE, 2 * _READ_SIZE + 7):
        path = tmp_path / f"f{size}"
        data = os.urandom(size)
        path.write_bytes(data)
        fd = os.open(path, os.O_RDONLY)
        try:
            assert _pread_all(fd) == data
            assert _pread_all(fd) == data  # again from the start
        finally:
            os.close(fd)
    assert _pread_all(None) == b""
