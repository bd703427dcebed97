"""The namespace counters that tell whether a command tried to reach the
network are read from /proc text; the reader finds them in any order."""

from __future__ import annotations

from pipekit.isolation._counters import COUNTERS as _COUNTERS
from pipekit.isolation._counters import Counters as _Counters
from pipekit.isolation._counters import _count, counts_from
from pipekit.isolation._counters import close_fds as _close_fds

SNMP = b"""Ip: Forwarding DefaultTTL InReceives OutNoRoutes ReasmTimeout
Ip: 1 64 7 3 0
Icmp: InMsgs InErrors
Icmp: 0 0
IcmpMsg: InType3 OutType3
IcmpMsg: 2 2
Tcp: RtoAlgorithm ActiveOpens AttemptFails MaxConn EstabResets
Tcp: 1 4 5 -1 0
Udp: InDatagrams NoPorts InErrors
Udp: 9 11 0
"""

SNMP6 = b"""Ip6InReceives                   \t4
Ip6OutNoRoutes                  \t6
Udp6NoPorts                     \t2"""


def test_counters_are_found_by_row_and_column() -> None:
    # beyond: Ip OutNoRoutes + Ip6OutNoRoutes; loopback: Tcp AttemptFails,
    # Udp NoPorts, Udp6NoPorts (the last line, with no newline after it)
    assert counts_from(SNMP, SNMP6) == {"beyond": 3 + 6, "loopback": 5 + 11 + 2}
    assert counts_from(SNMP, b"") == {"beyond": 3, "loopback": 16}
    assert counts_from(b"", SNMP6) == {"beyond": 6, "loopback": 2}
    other = SNMP.replace(b"OutNoRoutes", b"Other")
    assert counts_from(other, SNMP6) == {"beyond": 6, "loopback": 18}
    assert counts_from(b"", b"") == {"beyond": 0, "loopback": 0}


def test_every_counter_pipekit_watches_is_in_this_kernel() -> None:
    with open("/proc/self/net/snmp", "rb") as f:
        snmp = f.read()
    with open("/proc/self/net/snmp6", "rb") as f:
        snmp6 = f.read()
    for name in _COUNTERS:
        assert _count(name, snmp, snmp6) is not None, name
    fds: list[int] = []
    try:
        counters = _Counters("/proc/self/net", fds)
        assert set(counters.read()) == {"beyond", "loopback"}
        assert len(fds) == 2
        assert _Counters("/nonexistent", fds).read() == {"beyond": 0, "loopback": 0}
    finally:
        _close_fds(fds)
