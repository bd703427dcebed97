"""The setns way of isolating commands (as root): a thread makes a network
namespace, goes back to the host's, and enters the new one only around the
fork of a command. These tests run the runner's code in this process; the
namespaces they make hold only loopback, so nothing can leave the machine
even if a test fails."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from pipekit.isolation import _namespaces as netns

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or os.geteuid() != 0,
    reason="the setns method needs Linux and root (other users get the nsenter method)",
)


def _ns(pid: int | str = "self") -> str:
    return os.readlink(f"/proc/{pid}/ns/net")


def _thread_ns() -> str:
    return os.readlink("/proc/thread-self/ns/net")


def test_child_is_born_in_the_namespace_and_the_thread_returns() -> None:
    host = _thread_ns()
    tn = netns._ThreadNet()
    try:
        assert _thread_ns() == host  # back in the host's namespace at once
        assert tn.start(_thread_ns) != host  # its forker thread lives there
        proc = tn.start(
            lambda: subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    "import os, socket; print(os.readlink('/proc/self/ns/net'));"
                    "print(socket.if_nameindex())",
                ],
                stdout=subprocess.PIPE,
                text=True,
            )
        )
        assert _thread_ns() == host
        out, _ = proc.communicate()
        child_ns, ifaces = out.splitlines()
        assert child_ns not in (host, _ns()) and child_ns.startswith("net:[")
        assert ifaces == "[(1, 'lo')]"  # only loopback, and it is up (below)
    finally:
        tn.close()
    assert not tn.alive()  # closed: the next command of this thread makes a new one


def test_the_namespace_has_its_own_loopback_not_the_hosts() -> None:
    """A listener on the host's 127.0.0.1 is out of reach from inside; a
    listener made inside is reachable (loopback is up)."""
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]
    code = (
        "import socket, sys\n"
        f"r = socket.socket().connect_ex(('127.0.0.1', {port}))\n"
        "s = socket.create_server(('127.0.0.1', 0))\n"
        "c = socket.create_connection(s.getsockname(), timeout=2)\n"
        "print(r != 0, 'inside-ok')\n"
    )
    tn = netns._ThreadNet()
    try:
        proc = tn.start(
            lambda: subprocess.Popen(
                [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True
            )
        )
        out, _ = proc.communicate(timeout=30)
        assert out.split() == ["True", "inside-ok"]
        counters = tn.counters.read()
        assert counters["loopback"] >= 1  # the refused connection is counted
    finally:
        tn.close()
        srv.close()


def test_other_threads_keep_the_hosts_network() -> None:
    host = _ns()
    tn = netns._ThreadNet()
    try:
        inside = tn.start(_thread_ns)
        seen = [_thread_ns(), _ns()]  # this thread, the process's main thread
    finally:
        tn.close()
    assert inside != host and seen == [host, host]


def test_commands_start_without_the_capabilities_to_leave_the_namespace() -> None:
    """As root, the forker drops CAP_SYS_ADMIN (setns), CAP_SYS_PTRACE,
    CAP_NET_ADMIN and CAP_SYS_MODULE for good: a command cannot enter the
    host's namespace by its runner's /proc entry; this thread keeps them."""
    tn = netns._ThreadNet()
    try:
        proc = tn.start(
            lambda: subprocess.Popen(
                ["nsenter", f"--net=/proc/{os.getpid()}/ns/net", "--", "true"],
                stderr=subprocess.PIPE,
                text=True,
            )
        )
        _, err = proc.communicate(timeout=30)
        status = tn.start(lambda: Path("/proc/thread-self/status").read_text())
    finally:
        tn.close()
    # refused opening the runner's namespace (no CAP_SYS_PTRACE over a
    # process with more capabilities) or entering it (no CAP_SYS_ADMIN)
    assert proc.returncode != 0, err
    assert "Permission denied" in err or "Operation not permitted" in err, err
    dropped = 1 << 21 | 1 << 19 | 1 << 12 | 1 << 16
    assert not _bounding(status) & dropped
    with open("/proc/thread-self/status") as f:
        assert _bounding(f.read()) & dropped == dropped  # the caller keeps them


def _bounding(status: str) -> int:
    return int(next(ln for ln in status.splitlines() if ln.startswith("CapBnd:")).split()[1], 16)


def test_argv_enters_by_the_namespace_descriptor() -> None:
    tn = netns._ThreadNet()
    try:
        argv = tn.wrap([sys.executable, "-c", "import socket; print(socket.if_nameindex())"])
        assert argv[1] == f"--net=/proc/{os.getpid()}/fd/{tn.ns_fd}"
        out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
        assert out.strip() == "[(1, 'lo')]"
    finally:
        tn.close()


def test_each_thread_gets_its_own_namespace(monkeypatch: Any) -> None:
    monkeypatch.setenv("PIPEKIT_NETNS", "setns")
    names: list[str] = []

    def one() -> None:
        h = netns._holder()
        assert h.method == "setns"
        names.append(h.start(_thread_ns))  # type: ignore[union-attr]

    threads = [threading.Thread(target=one) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(names)) == 3 and _ns() not in names


def test_method_choice(monkeypatch: Any) -> None:
    monkeypatch.setenv("PIPEKIT_NETNS", "nsenter")
    assert netns._method() == "nsenter"
    monkeypatch.setenv("PIPEKIT_NETNS", "auto")
    assert netns._method() == "setns"  # root, Linux
    monkeypatch.setenv("PIPEKIT_NETNS", "bogus")
    assert netns._method() == "setns"


def _refused_udp(times: int) -> None:
    """Datagrams to a closed port of 127.0.0.1: each counts as Udp NoPorts."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _ in range(times):
            s.sendto(b"x", ("127.0.0.1", 9))


def test_counters_are_the_namespaces_not_the_hosts() -> None:
    """The counters are read without entering the namespace again (their
    files stay open): what the host's loopback refuses must not count, what
    the namespace's refuses must."""
    tn = netns._ThreadNet()
    try:
        before = tn.counters.read()
        _refused_udp(5)  # this thread is in the host's namespace
        assert tn.counters.read() == before
        tn.start(lambda: _refused_udp(3))
        assert tn.counters.read()["loopback"] == before["loopback"] + 3
    finally:
        tn.close()


def test_one_reading_a_command_while_commands_leave_nothing_behind() -> None:
    """A command's closing reading opens the next one's only when nothing
    can have run in the namespace in between: no other command live, and
    the last one's process group gone."""
    tn = netns._ThreadNet()
    try:
        counters = tn.counters
        counters.opening()
        closed = counters.closing(left_nothing=True)
        assert counters.opening() is closed  # no second reading
        counters.closing(left_nothing=False)  # something of it may still run...
        tn.start(lambda: _refused_udp(2))  # ...and does
        assert counters.opening()["loopback"] == closed["loopback"] + 2
        counters.opening()  # two commands at once: neither's closing is kept
        kept = counters.closing(left_nothing=True)
        assert counters.opening() is not kept
    finally:
        tn.close()


def test_a_thread_moved_into_its_namespace_stays_there_around_commands() -> None:
    """isolate_thread: the thread, and what it starts, live in the
    namespace; a command's popen returns the thread to it (not to the
    host's); trusted() (the runner's own work) runs with the host's
    network; restore_thread brings the thread home."""
    from pipekit.isolation import _guard as netguard

    seen: dict[str, Any] = {}

    def body() -> None:
        host = _thread_ns()
        with netns.guarded(netguard.Policy("s", "p", isolation="strict")) as g:
            seen["inside"] = _thread_ns()
            cmd = netns.isolate_command(["/bin/true"])
            cmd.popen().wait()
            cmd.check()
            seen["after_command"] = _thread_ns()
            with netns.trusted():
                seen["trusted"] = _thread_ns()
            seen["after_trusted"] = _thread_ns()
            seen["mode"] = g.mode
        seen["host"] = host
        seen["back"] = _thread_ns()

    t = threading.Thread(target=body)
    t.start()
    t.join()
    assert seen["inside"] != seen["host"]
    assert seen["after_command"] == seen["inside"] == seen["after_trusted"]
    assert seen["trusted"] == seen["host"] == seen["back"]
    assert seen["mode"] == "isolated"


def test_strict_isolation_refuses_an_allow_list_it_cannot_keep() -> None:
    from pipekit import NonRetryable
    from pipekit.isolation import _guard as netguard

    policy = netguard.Policy("s", "p", ["loopback", "10.0.0.0/8"], isolation="strict")
    before = _thread_ns()
    with pytest.raises(NonRetryable, match=r"cannot let 10\.0\.0\.0/8 in"):
        with netns.guarded(policy):
            pass
    assert _thread_ns() == before
    # loopback entries name the namespace's own loopback: kept
    loopbacks = ["loopback", "127.0.0.1:5432", "127.0.0.0/8", "::1", "localhost"]
    with netns.guarded(netguard.Policy("s", "p", loopbacks, isolation="strict")) as g:
        assert _thread_ns() != before and g.mode == "isolated"
    assert _thread_ns() == before


def test_the_runners_work_in_a_thread_the_processor_started_uses_the_hosts_network() -> None:
    """A thread started by a processor moved into its namespace is born
    there (so is its work); trusted() in it (the record loop's checkpoint
    thread saving to a store) runs in the host's namespace."""
    from pipekit.isolation import _guard as netguard

    seen: dict[str, str] = {}

    def helper() -> None:
        seen["helper"] = _thread_ns()
        with netns.trusted():
            seen["trusted"] = _thread_ns()
        seen["after"] = _thread_ns()

    def body() -> None:
        seen["host"] = _thread_ns()
        with netns.guarded(netguard.Policy("s", "p", isolation="strict")):
            seen["inside"] = _thread_ns()
            t = threading.Thread(target=helper)
            t.start()
            t.join()

    t = threading.Thread(target=body)
    t.start()
    t.join()
    assert seen["helper"] == seen["inside"] == seen["after"] != seen["host"]
    assert seen["trusted"] == seen["host"]


def test_a_forked_child_starts_its_commands_with_a_forker_of_its_own() -> None:
    """A processor's fork (multiprocessing's fork method) has no forker
    thread: its isolated command must start anyway, in a namespace."""
    from pipekit.isolation import _guard as netguard

    def body() -> None:
        with netns.guarded(netguard.Policy("s", "p")):
            netns.isolate_command(["/bin/true"]).popen().wait()  # this thread's forker
            pid = os.fork()
            if pid == 0:  # the child: one thread, a copy of the parent's namespace object
                try:
                    cmd = netns.isolate_command(
                        [sys.executable, "-c", "import socket; print(socket.if_nameindex())"]
                    )
                    out = cmd.popen(stdout=subprocess.PIPE, text=True).communicate(timeout=30)[0]
                    os._exit(0 if out.strip() == "[(1, 'lo')]" else 3)
                finally:
                    os._exit(4)
            result["status"] = os.waitpid(pid, 0)[1]

    result: dict[str, int] = {}
    t = threading.Thread(target=body)
    t.start()
    t.join(60)
    assert not t.is_alive() and result["status"] == 0, result


def test_a_namespace_made_by_a_thread_returns_it_where_it_lives() -> None:
    """Making a namespace (a forked child's, say) from a thread moved into
    another, or born in one, leaves the thread where it was."""
    from pipekit.isolation import _guard as netguard

    seen: dict[str, str] = {}

    def helper() -> None:  # born in the processor's namespace
        before = _thread_ns()
        made = netns._ThreadNet()
        try:
            seen["helper"] = str(before == _thread_ns() != made.start(_thread_ns))
        finally:
            made.close()

    def body() -> None:
        with netns.guarded(netguard.Policy("s", "p", isolation="strict")):
            inside = _thread_ns()
            made = netns._ThreadNet()
            try:
                seen["moved"] = str(inside == _thread_ns() != made.start(_thread_ns))
            finally:
                made.close()
            t = threading.Thread(target=helper)
            t.start()
            t.join()

    t = threading.Thread(target=body)
    t.start()
    t.join()
    assert seen == {"moved": "True", "helper": "True"}
