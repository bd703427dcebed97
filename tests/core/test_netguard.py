"""The network guard in-process: allow-list rules, the audit hook's scope
(the guarded thread and the threads it starts, never the runner's other
threads), pipekit check, and config errors. Every address is loopback; the
refused ones are on 127.0.0.2, so a broken guard connects harmlessly and the
test fails."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from conftest import Project
from pipekit import NetworkRefused
from pipekit.isolation import _guard as netguard


@pytest.fixture
def listener() -> Any:
    srv = socket.socket()
    srv.bind(("127.0.0.2", 0))
    srv.listen(8)
    srv.setblocking(False)
    yield srv
    srv.close()


def accepted(srv: socket.socket) -> int:
    n = 0
    while True:
        try:
            conn, _ = srv.accept()
        except BlockingIOError:
            return n
        conn.close()
        n += 1


def policy(*allow: str, **kw: Any) -> netguard.Policy:
    return netguard.Policy("s", "proc", list(allow), **kw)


@pytest.mark.parametrize(
    ("entry", "ok", "bad"),
    [
        ("loopback", [("127.9.9.9", 1), ("::1", 5), ("::ffff:127.0.0.1", 80)], [("10.0.0.1", 1)]),
        ("10.1.2.3:5432", [("10.1.2.3", 5432)], [("10.1.2.3", 5433), ("10.1.2.4", 5432)]),
        ("10.0.0.0/8", [("10.200.1.1", 1)], [("11.0.0.1", 1)]),
        ("[fd00::1]:53", [("fd00::1", 53)], [("fd00::1", 54), ("fd00::2", 53)]),
        ("fd00::/8", [("fd12::1", 1)], [("fe80::1", 1)]),
    ],
)
def test_address_rules(entry: str, ok: list[Any], bad: list[Any]) -> None:
    p = policy(entry)
    for host, port in ok:
        assert p.allows_ip(netguard.ip_of(host), port), (entry, host, port)
    for host, port in bad:
        assert not p.allows_ip(netguard.ip_of(host), port), (entry, host, port)


def test_name_rules() -> None:
    p = policy("db.internal:5432", "*.corp.example", "Api.Example.")
    assert p.allows_name("db.internal", 5432) and not p.allows_name("db.internal", 80)
    assert p.allows_name("x.y.corp.example", 1) and not p.allows_name("corp.example", 1)
    assert p.allows_name("api.example", 443)
    assert not p.allows_name("other.internal", 5432)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("", "an empty entry"),
        ("http://example.com", "not a URL"),
        ("10.1.2.3:99999", "port must be a number"),
        ("db:x", "port must be a number"),
        ("10.0.0.0/33", "is not a network"),
        ("[fd00::1", "without its ']'"),
        ("exa mple", "is not an address"),
        ("10.0.0.0/8:80", "a network takes no port"),
    ],
)
def test_bad_entries(entry: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        netguard.parse_rule(entry)


def test_guard_is_scoped_to_its_thread_and_the_threads_it_starts(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    results: dict[str, str] = {}
    inside = threading.Event()
    release = threading.Event()

    def connect(label: str) -> None:
        try:
            socket.create_connection(("127.0.0.2", port), timeout=5).close()
            results[label] = "connected"
        except NetworkRefused:
            results[label] = "refused"

    def runner_thread() -> None:  # e.g. the commit thread or a lock backend
        inside.wait(5)
        connect("runner")
        release.set()

    other = threading.Thread(target=runner_thread)
    other.start()
    with netguard.guarded(policy("127.0.0.1")) as g:
        inside.set()
        release.wait(5)
        connect("processor")
        child = threading.Thread(target=connect, args=("child",))
        child.start()
        child.join()
        with netguard.lifted():
            connect("trusted")
    other.join()
    connect("after")
    assert results == {
        "runner": "connected",
        "processor": "refused",
        "child": "refused",
        "trusted": "connected",
        "after": "connected",
    }
    assert accepted(listener) == 3
    assert len(g.violations) == 2 and g.mode == "guarded"


def test_refusals_name_what_was_tried(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    with netguard.guarded(policy("127.0.0.1")) as g:
        with pytest.raises(NetworkRefused, match=rf"connect to 127\.0\.0\.2:{port}"):
            socket.socket().connect(("127.0.0.2", port))
        with pytest.raises(NetworkRefused, match=r"listen on every interface \(0\.0\.0\.0:0\)"):
            socket.socket().bind(("", 0))
        with pytest.raises(NetworkRefused, match=rf"send a datagram to 127\.0\.0\.2:{port}"):
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", ("127.0.0.2", port))
        with pytest.raises(NetworkRefused, match="start the program"):
            subprocess.run([sys.executable, "-c", "pass"])
        # allowed: loopback 127.0.0.1, local sockets, a literal address look-up
        a, b = socket.socketpair()
        a.close()
        b.close()
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.close()
        assert socket.getaddrinfo("127.0.0.2", port)
    assert accepted(listener) == 0
    assert len(g.violations) == 4


def test_allow_all_guards_nothing(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    with netguard.guarded(policy("127.0.0.1", allow_all=True)) as g:
        socket.create_connection(("127.0.0.2", port), timeout=5).close()
    assert g.mode == "allowed" and not g.violations
    assert accepted(listener) == 1


def test_config_errors_name_the_field(project: Project) -> None:
    project.pipeline(
        [
            {
                "name": "a",
                "uses": "copy",
                "inputs": ["in.txt"],
                "outputs": ["out.txt"],
                "network": {"allow": ["http://x", "db:5432"], "isolation": "always"},
            },
            {
                "name": "b",
                "uses": "copy",
                "inputs": ["in.txt"],
                "outputs": ["b.txt"],
                "allow_network": "yes",
            },
        ],
        network={"allow": ["10.0.0.0/40"]},
    )
    project.write("in.txt", "x\n")
    proc = project.cli("run")
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    err = proc.stderr
    assert "field 'network.allow': '10.0.0.0/40' is not a network" in err, err
    assert "stage 'a' (stages[0]), field 'network.allow': 'http://x': write the host" in err, err
    assert "stage 'a' (stages[0]), field 'network.isolation': expected one of 'auto'" in err, err
    assert "stage 'b' (stages[1]), field 'allow_network': expected true or false" in err, err


def test_check_reports_network_use_and_runs_nothing(project: Project) -> None:
    env = project.env(PIPEKIT_PLUGIN_MODULES="pipekit_testplugin,pipekit_nettest")
    project.write("in.txt", "x\n")
    project.pipeline(
        [
            {"name": "fetch", "uses": "net-connect", "outputs": ["f.txt"]},
            {
                "name": "curl",
                "uses": "shell",
                "outputs": ["c.txt"],
                "params": {"cmd": "curl -o {output} https://example.com/data"},
            },
            {
                "name": "local",
                "uses": "shell",
                "inputs": ["in.txt"],
                "outputs": ["l.txt"],
                "params": {"cmd": "tr a-z A-Z < {input} > {output} # see http://127.0.0.1/x"},
            },
            {"name": "up", "uses": "upper", "inputs": ["in.txt"], "outputs": ["u.txt"]},
            {"name": "open", "uses": "net-connect", "outputs": ["o.txt"], "allow_network": True},
        ]
    )
    proc = project.cli("check", env=env)
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    out = proc.stdout
    lines = {line.split()[1]: line for line in out.splitlines() if line[:4] in ("ok  ", "FAIL")}
    assert lines["fetch"].startswith("FAIL") and lines["curl"].startswith("FAIL"), out
    assert all(lines[n].startswith("ok") for n in ("local", "up", "open")), out
    assert "imports socket (sockets)" in out and "pipekit_nettest.py:" in out, out
    assert "params.cmd runs curl" in out and "names the URL https://example.com" in out, out
    assert "2 stage(s) show network use" in out, out
    proc = project.cli("check", "--json", env=env)
    doc = json.loads(proc.stdout)
    assert proc.returncode == 1 and doc["problems"] == 2
    stages = {s["name"]: s for s in doc["stages"]}
    assert stages["open"]["network"] == "allowed" and stages["open"]["ok"]
    # shell.py starts programs: a note only
    findings = stages["local"]["findings"]
    assert {Path(f["file"]).name for f in findings} == {"shell.py"}, findings
    assert all(
        f["kind"] == "note"
        and f["what"] == "imports subprocess (starts programs through pipekit.isolate_command)"
        for f in findings
    ), findings
    assert not (project.root / ".pipekit").exists(), "check must run nothing"
    assert not any((project.root / n).exists() for n in ("f.txt", "c.txt", "u.txt"))
    # only allowed stages use the network: clean
    project.pipeline(
        [{"name": "open", "uses": "net-connect", "outputs": ["o.txt"], "allow_network": True}]
    )
    proc = project.cli("check", env=env)
    assert proc.returncode == 0, proc.stdout
    assert "no stage shows network use it is not allowed" in proc.stdout


class _LyingSocket(socket.socket):
    """An IPv4 socket that says it is a local (AF_UNIX) one."""

    @property  # type: ignore[override]
    def family(self) -> socket.AddressFamily:
        return socket.AF_UNIX


def test_a_socket_that_lies_about_its_family_is_judged_by_its_descriptor() -> None:
    """The guard asks the kernel what the socket is (SO_DOMAIN), not the
    Python object: 192.0.2.1 (TEST-NET-1) is refused before any packet."""
    with netguard.guarded(policy("loopback")) as g:
        with _LyingSocket(socket.AF_INET, socket.SOCK_STREAM) as s:
            assert s.family == socket.AF_UNIX
            s.settimeout(10)  # a broken guard fails the test, it does not hang it
            with pytest.raises(NetworkRefused, match=r"connect to 192\.0\.2\.1:9"):
                s.connect(("192.0.2.1", 9))
        with _LyingSocket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            with pytest.raises(NetworkRefused, match=r"send a datagram to 192\.0\.2\.1:9"):
                s.sendto(b"x", ("192.0.2.1", 9))
    assert len(g.violations) == 2


def test_the_scan_sees_imports_by_a_literal_name_only() -> None:
    import ast

    from pipekit.isolation import _scan as netscan

    source = (
        "import importlib\n"
        "importlib.import_module('socket')\n"
        "__import__('http.client')\n"
        "importlib.import_module(name)\n"
        "__import__(5)\n"
        "from . import sibling\n"
    )
    found = sorted(netscan._imports(ast.parse(source), "pkg.sub"))
    assert found == sorted(
        [
            ("importlib", 1),
            ("socket", 2),
            ("http.client", 3),
            ("pkg.sub", 6),
            ("pkg.sub.sibling", 6),
        ]
    ), found
