"""The offline guarantee (DESIGN §8): stages cannot reach the network.

No test here may send a packet beyond loopback, even when the guard is
broken: refusals are tested with a policy that allows only 127.0.0.1
against listeners on 127.0.0.2 (a broken guard connects harmlessly, and the
test fails because the listener saw it), and whatever could otherwise leave
the machine (name look-ups, TEST-NET addresses) runs inside a network
namespace that the test makes itself, holding only loopback; if that
namespace cannot be made, the test fails instead of running unprotected.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import HELPERS, Project

PLUGINS = "pipekit_testplugin,pipekit_nettest"
TEST_NET = "192.0.2.1"  # RFC 5737 documentation range: never a real host


def env(project: Project, **extra: str) -> dict[str, str]:
    return project.env(PIPEKIT_PLUGIN_MODULES=PLUGINS, **extra)


class Listener:
    """A TCP listener on a loopback address that records every connection."""

    def __init__(self, host: str) -> None:
        self.sock = socket.socket()
        self.sock.bind((host, 0))
        self.sock.listen(16)
        self.sock.setblocking(False)
        self.host, self.port = self.sock.getsockname()

    def received(self, wait: float = 0.2) -> list[str]:
        """What every connection made so far sent (waiting ``wait`` s for late ones)."""
        lines = []
        deadline = time.monotonic() + wait
        while True:
            try:
                conn, _ = self.sock.accept()
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    return lines
                time.sleep(0.02)
                continue
            conn.settimeout(5)
            with conn:
                lines.append(conn.makefile().read().strip())

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def listener2() -> Any:
    lst = Listener("127.0.0.2")
    yield lst
    lst.close()


def netns(argv: list[str], *, mount: bool = False) -> list[str]:
    """``argv`` inside a new network namespace holding only loopback (and a
    mount namespace of its own when ``mount``)."""
    unshare = shutil.which("unshare")
    assert unshare, "unshare (util-linux) is needed to run this test safely"
    flags = ["--net"] if os.geteuid() == 0 else ["--net", "--map-root-user"]
    if mount:
        flags.append("--mount")
    parent = os.readlink("/proc/self/ns/net")
    return [unshare, *flags, "--", sys.executable, str(HELPERS / "in_netns.py"), parent, *argv]


def run(project: Project, *args: str, in_netns: bool = False, **extra: str) -> Any:
    argv = [sys.executable, "-m", "pipekit", "run", "--json", *args]
    proc = subprocess.run(
        netns(argv, mount="IN_NETNS_HOSTS" in extra) if in_netns else argv,
        cwd=project.root,
        env=env(project, **extra),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.stdout.strip(), (proc.returncode, proc.stderr)
    return proc.returncode, json.loads(proc.stdout), proc.stderr


def record(project: Project, summary: dict[str, Any]) -> dict[str, Any]:
    path = project.root / ".pipekit" / "runs" / f"{summary['run_id']}.json"
    return json.loads(path.read_text())  # type: ignore[no-any-return]


def by_name(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in summary["stages"]}


def connect_stage(name: str, host: str, port: int, **params: Any) -> dict[str, Any]:
    return {
        "name": name,
        "uses": "net-connect",
        "outputs": [f"out/{name}.txt"],
        "params": {"host": host, "port": port, **params},
    }


def test_loopback_allowed_and_network_policy_not_in_fingerprint(project: Project) -> None:
    lst = Listener("127.0.0.1")
    try:
        project.pipeline([connect_stage("c", "127.0.0.1", lst.port)])
        code, summary, err = run(project)
        assert code == 0, (summary, err)
        assert lst.received() == ["hello from c"]
        assert by_name(summary)["c"]["network"] == "guarded"
        stage = record(project, summary)["stages"][0]
        assert stage["network"] == "guarded"
        assert record(project, summary)["network_allowed"] == []
        # the network policy does not change what a stage writes: no rerun
        project.pipeline(
            [{**connect_stage("c", "127.0.0.1", lst.port), "network": {"allow": ["db:5432"]}}],
            network={"allow": ["127.0.0.1"]},
        )
        code, summary, err = run(project)
        assert code == 0 and by_name(summary)["c"]["status"] == "skipped", (summary, err)
        assert lst.received() == []
    finally:
        lst.close()


def test_refused_before_any_connection(project: Project, listener2: Listener) -> None:
    port = listener2.port
    project.pipeline(
        [
            connect_stage("plain", "127.0.0.2", port),
            connect_stage("swallowed", "127.0.0.2", port, swallow=True),
            connect_stage("threaded", "127.0.0.2", port, in_thread=True),
            {**connect_stage("in-worker", "127.0.0.2", port), "timeout": 60},
            {**connect_stage("retried", "127.0.0.2", port), "retry": {"attempts": 3}},
        ],
        network={"allow": ["127.0.0.1"]},
    )
    code, summary, err = run(project, "-k")
    assert code == 1
    assert listener2.received() == [], "a refused connection reached the listener"
    for name, st in by_name(summary).items():
        assert st["status"] == "failed", st
        reason = st["reason"]
        assert "network guard" in reason and f"stage {name!r}" in reason, reason
        assert "processor 'net-connect'" in reason, reason
        assert f"connect to 127.0.0.2:{port}" in reason, reason
        assert "allowed network (127.0.0.1)" in reason, reason
        assert f"--allow-network {name}" in reason and "allow_network = true" in reason, reason
        assert st["network"] == "guarded", st
        assert f"stage {name!r}: failed" in err
    stages = {s["name"]: s for s in record(project, summary)["stages"]}
    assert stages["retried"]["attempts"] == 1  # refusals are not retried
    assert not (project.root / "out").exists() or not any((project.root / "out").iterdir())
    # a cached plan carries the network policy too
    old = time.time() - 10
    os.utime(project.file, (old, old))
    run(project, "--force", "plain")  # stores the plan
    code, summary, err = run(project, "--force", "plain", "-vv")
    assert "plan cache: using" in err, err
    assert code == 1 and "connect to 127.0.0.2" in by_name(summary)["plain"]["reason"]
    assert listener2.received() == []


def test_allow_network_lifts_the_guard(project: Project, listener2: Listener) -> None:
    port = listener2.port
    project.pipeline(
        [
            {**connect_stage("open", "127.0.0.2", port), "allow_network": True},
            connect_stage("listed", "127.0.0.2", port),
            connect_stage("closed", "127.0.0.2", port),
        ],
        network={"allow": ["127.0.0.1"]},
    )
    project.write(
        "pipekit.toml",
        project.file.read_text().replace(
            'name = "listed"', f'name = "listed"\nnetwork = {{ allow = ["127.0.0.2:{port}"] }}'
        ),
    )
    code, summary, _ = run(project, "-k")
    assert code == 1
    st = by_name(summary)
    assert (st["open"]["status"], st["listed"]["status"], st["closed"]["status"]) == (
        "ok",
        "ok",
        "failed",
    )
    assert (st["open"]["network"], st["listed"]["network"]) == ("allowed", "guarded")
    assert sorted(listener2.received()) == ["hello from listed", "hello from open"]
    assert record(project, summary)["network_allowed"] == ["open"]
    # the command line lifts it for one stage
    code, summary, _ = run(project, "--allow-network", "closed")
    assert code == 0
    assert by_name(summary)["closed"]["network"] == "allowed"
    assert listener2.received() == ["hello from closed"]
    assert record(project, summary)["network_allowed"] == ["closed"]


def test_name_lookups_refused_inside_a_namespace(project: Project) -> None:
    project.pipeline(
        [
            {
                "name": "lookup",
                "uses": "net-connect",
                "outputs": ["a.txt"],
                "params": {"lookup": "example.com"},
            },
            {
                "name": "lookup-swallowed",
                "uses": "net-connect",
                "outputs": ["b.txt"],
                "params": {"lookup": "pypi.org", "swallow": True},
            },
            {
                "name": "local",
                "uses": "net-connect",
                "outputs": ["c.txt"],
                "params": {"lookup": "localhost"},
            },
            connect_stage("test-net", TEST_NET, 9),
        ]
    )
    code, summary, _ = run(project, "-k", in_netns=True)
    assert code == 1
    st = by_name(summary)
    assert st["local"]["status"] == "ok"
    assert project.read("c.txt").startswith("resolved 127.0.0.1") or project.read(
        "c.txt"
    ).startswith("resolved ::1")
    for name, target in (("lookup", "example.com"), ("lookup-swallowed", "pypi.org")):
        reason = st[name]["reason"]
        assert st[name]["status"] == "failed"
        assert f"network guard: stage {name!r} (processor 'net-connect')" in reason, reason
        assert f"look up the name {target!r}" in reason, reason
        assert f"add {target!r} to network.allow" in reason, reason
    assert f"connect to {TEST_NET}:9" in st["test-net"]["reason"]


def test_allowed_names_and_their_addresses(project: Project, tmp_path: Path) -> None:
    """A name in the allow list may be looked up and connected to (the
    guard learns its addresses); its address alone is not allowed. Runs in
    a namespace whose /etc/hosts maps the test's names: no DNS server."""
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n127.0.0.3 db.test\n127.0.0.4 other.test\n")
    project.pipeline(
        [
            {
                **connect_stage("by-name", "db.test", 5432, swallow=True),
                "params": {"host": "db.test", "port": 5432, "lookup": "db.test", "swallow": True},
            },
            connect_stage("by-address", "127.0.0.3", 5432, swallow=True),
            connect_stage("wrong-port", "db.test", 5433, swallow=True),
            connect_stage("other", "other.test", 5432, swallow=True),
        ],
        network={"allow": ["db.test:5432"]},
    )
    code, summary, _ = run(project, "-k", in_netns=True, IN_NETNS_HOSTS=str(hosts))
    st = by_name(summary)
    assert st["by-name"]["status"] == "ok", st
    # allowed by the guard, refused by the (empty) namespace's kernel
    assert project.read("out/by-name.txt") == (
        "resolved 127.0.0.3\nswallowed ConnectionRefusedError\n"
    )
    assert "connect to 127.0.0.3:5432" in st["by-address"]["reason"]
    assert "db.test:5433" in st["wrong-port"]["reason"]
    assert "'other.test'" in st["other"]["reason"]
    assert code == 1


def shell_stage(name: str, code: str, **extra: Any) -> dict[str, Any]:
    py = sys.executable
    return {
        "name": name,
        "uses": "shell",
        "outputs": [f"out/{name}.txt"],
        "params": {"cmd": f'echo started > {{output}}; {py} -c "{code}"'},
        **extra,
    }


# How commands enter their namespace: setns (root only) and nsenter (any user).
METHODS = ["setns", "nsenter"] if os.geteuid() == 0 else ["nsenter"]


@pytest.mark.parametrize("method", METHODS)
def test_shell_command_runs_without_network_inside_a_namespace(
    project: Project, method: str
) -> None:
    connect = f"import socket; socket.create_connection(('{TEST_NET}', 9), timeout=2)"
    swallow = f"import socket; print(socket.socket().connect_ex(('{TEST_NET}', 9)))"
    project.pipeline(
        [
            shell_stage("connect", connect),
            shell_stage("swallow", swallow),
            shell_stage("local", "print(1)"),
        ]
    )
    code, summary, _ = run(project, "-k", in_netns=True, PIPEKIT_NETNS=method)
    assert code == 1
    st = by_name(summary)
    # the commands ran in a namespace; the shell processor's own code under
    # the audit hook only: the record says the weaker of the two
    assert (st["local"]["status"], st["local"]["network"]) == ("ok", "guarded")
    for name in ("connect", "swallow"):
        reason = st[name]["reason"]
        assert st[name]["status"] == "failed" and st[name]["network"] == "guarded"
        assert f"network guard: the command of stage {name!r} (processor 'shell')" in reason
        assert "tried to reach the network" in reason, reason
        assert f"--allow-network {name}" in reason, reason


@pytest.mark.parametrize("method", METHODS)
def test_shell_command_cannot_reach_host_loopback(
    project: Project, listener2: Listener, method: str
) -> None:
    connect = f"import socket; socket.create_connection(('127.0.0.2', {listener2.port})).sendall(b'hello from shell')"
    project.pipeline(
        [
            shell_stage("closed", connect),
            shell_stage("open", connect, allow_network=True),
            shell_stage("off", connect, network={"isolation": "off"}),
        ]
    )
    code, summary, _ = run(project, "-k", PIPEKIT_NETNS=method)
    assert code == 1
    st = by_name(summary)
    assert (st["open"]["status"], st["open"]["network"]) == ("ok", "allowed")
    assert (st["off"]["status"], st["off"]["network"]) == ("ok", "unguarded")
    # only the allowed and the unisolated ones got through
    assert listener2.received() == ["hello from shell"] * 2
    reason = st["closed"]["reason"]
    assert st["closed"]["network"] == "guarded"
    assert "network guard" in reason and "loopback" in reason and "--allow-network closed" in reason
    code, summary, _ = run(project, "--allow-network", "all")
    assert code == 0 and by_name(summary)["closed"]["network"] == "allowed"
    assert listener2.received() == ["hello from shell"]


@pytest.mark.parametrize("method", METHODS)
def test_programs_need_isolate_command(project: Project, method: str) -> None:
    ifaces = "import socket; print(socket.if_nameindex())"
    project.pipeline(
        [
            {"name": "raw", "uses": "net-program", "outputs": ["raw.txt"]},
            {
                "name": "isolated",
                "uses": "net-program",
                "outputs": ["iso.txt"],
                "params": {"isolated": True, "code": ifaces},
            },
            {
                "name": "popen",
                "uses": "net-program",
                "outputs": ["popen.txt"],
                "params": {"isolated": True, "popen": True, "code": ifaces},
            },
            {
                "name": "allowed",
                "uses": "net-program",
                "outputs": ["ok.txt"],
                "allow_network": True,
            },
        ]
    )
    code, summary, _ = run(project, "-k", PIPEKIT_NETNS=method)
    assert code == 1
    st = by_name(summary)
    reason = st["raw"]["reason"]
    assert (
        "network guard: stage 'raw' (processor 'net-program') tried to start the program" in reason
    )
    assert "pipekit.isolate_command" in reason and "--allow-network raw" in reason
    # its program ran in a namespace, its own code under the audit hook only
    assert (st["isolated"]["status"], st["isolated"]["network"]) == ("ok", "guarded")
    assert project.read("iso.txt").strip() == "[(1, 'lo')]"  # a namespace with only loopback
    assert (st["popen"]["status"], st["popen"]["network"]) == ("ok", "guarded")
    assert project.read("popen.txt").strip() == "[(1, 'lo')]"
    assert (st["allowed"]["status"], st["allowed"]["network"]) == ("ok", "allowed")


def test_without_namespaces_commands_run_unguarded_or_fail_when_required(
    project: Project, tmp_path: Path
) -> None:
    """No unshare/nsenter on PATH (and the nsenter method, which needs
    them): 'auto' runs the command with the host's network and says so;
    'required' fails the stage."""
    bare = tmp_path / "bin"
    bare.mkdir()
    project.pipeline(
        [
            {
                "name": "auto",
                "uses": "shell",
                "outputs": ["a.txt"],
                "params": {"cmd": "echo a > {output}"},
            },
            {
                "name": "strict",
                "uses": "shell",
                "outputs": ["b.txt"],
                "params": {"cmd": "echo b > {output}"},
                "network": {"isolation": "required"},
            },
        ]
    )
    code, summary, err = run(project, "-k", PATH=str(bare), PIPEKIT_NETNS="nsenter")
    assert code == 1
    st = by_name(summary)
    assert (st["auto"]["status"], st["auto"]["network"]) == ("ok", "unguarded")
    assert "its commands run with the host's network" in err and "unshare" in err
    reason = st["strict"]["reason"]
    assert "requires its commands to run without network" in reason, reason
    assert "unshare and nsenter not found" in reason, reason


def _redis(tmp_path: Path) -> tuple[subprocess.Popen[bytes], int]:
    exe = shutil.which("redis-server")
    if exe is None:
        if os.environ.get("PIPEKIT_REQUIRE_REDIS") == "1":
            pytest.fail("redis-server is not installed and PIPEKIT_REQUIRE_REDIS=1")
        pytest.skip("redis-server is not installed")
    with socket.socket() as s:
        s.bind(("127.0.0.2", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [
            exe,
            "--bind",
            "127.0.0.2",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.2", port), timeout=1) as c:
                c.sendall(b"PING\r\n")
                if c.recv(16).startswith(b"+PONG"):
                    return proc, port
        except OSError:
            pass
        assert time.monotonic() < deadline, "redis-server did not start"
        time.sleep(0.05)


# Under isolation = "strict" (root only): a whole stage resuming from its
# checkpoint, and a record stage whose checkpoints a thread of its own saves.
STRICT_STAGES: list[dict[str, Any]] = (
    [
        {
            "name": "resume-strict",
            "uses": "resumable",
            "inputs": ["in.txt"],
            "outputs": ["r3.txt"],
            "retry": {"attempts": 2, "backoff": 0.0, "jitter": 0.0},
            "network": {"isolation": "strict"},
        },
        {
            "name": "upper-strict",
            "uses": "upper",
            "inputs": ["in.txt"],
            "outputs": ["up.txt"],
            "checkpoint": {"every_records": 1},
            "network": {"isolation": "strict"},
        },
    ]
    if sys.platform.startswith("linux") and os.geteuid() == 0
    else []
)


def test_backend_connections_are_not_guarded(project: Project, tmp_path: Path) -> None:
    """A backend on a real Redis at an address the processors may not
    reach: the runner's own connections (locks, the checkpoint store that
    ctx.checkpoint uses from inside a processor, in a thread or a worker
    process) go through; a processor's connection to it is refused."""
    proc, port = _redis(tmp_path)
    try:
        project.write("in.txt", "x\n")
        project.pipeline(
            [
                {
                    "name": "resume",
                    "uses": "resumable",
                    "inputs": ["in.txt"],
                    "outputs": ["r1.txt"],
                    "retry": {"attempts": 2, "backoff": 0.0, "jitter": 0.0},
                },
                {
                    "name": "resume-worker",
                    "uses": "resumable",
                    "inputs": ["in.txt"],
                    "outputs": ["r2.txt"],
                    "timeout": 60,
                    "retry": {"attempts": 2, "backoff": 0.0, "jitter": 0.0},
                },
                connect_stage("sneaky", "127.0.0.2", port),
                *STRICT_STAGES,
            ],
            backend={"name": "resp-test", "options": {"url": f"127.0.0.2:{port}"}},
            network={"allow": ["127.0.0.1"]},
        )
        code, summary, _ = run(project, "-k")
        st = by_name(summary)
        assert code == 1
        assert (st["resume"]["status"], st["resume-worker"]["status"]) == ("ok", "ok"), st
        assert project.read("r1.txt") == "loaded={'done_part': 1}\n"
        assert project.read("r2.txt") == "loaded={'done_part': 1}\n"
        assert f"connect to 127.0.0.2:{port}" in st["sneaky"]["reason"]
        for strict in STRICT_STAGES:  # in the namespace; their checkpoints reach Redis
            assert (st[strict["name"]]["status"], st[strict["name"]]["network"]) == (
                "ok",
                "isolated",
            ), st
        assert project.read("r3.txt") == "loaded={'done_part': 1}\n"
        assert project.read("up.txt") == "X\n"
        with socket.create_connection(("127.0.0.2", port)) as c:
            c.sendall(b"LRANGE log 0 -1\r\n")
            time.sleep(0.2)
            log = c.recv(65536).decode()
        for op in ("locks", "put pipekit", "get pipekit", "delete pipekit"):
            assert op.split()[0] in log, log
        assert log.count("put ") >= 2 and log.count("get ") >= 4, log
    finally:
        proc.terminate()
        proc.wait()


ROOT_ONLY = pytest.mark.skipif(
    not sys.platform.startswith("linux") or os.geteuid() != 0,
    reason="moving a thread into a network namespace needs Linux and root (the setns method)",
)


@ROOT_ONLY
def test_strict_isolation_holds_programs_the_audit_hook_cannot_see(
    project: Project, listener2: Listener
) -> None:
    """A program started with no audit event (libc system(), as
    _posixsubprocess.fork_exec) sees only loopback under isolation =
    "strict", and the host's loopback listener is out of its reach; the
    runner's own files and the record still work; "auto" says "guarded"."""
    code = (
        "import socket; print(socket.if_nameindex()); "
        f"print(socket.socket().connect_ex(('127.0.0.2', {listener2.port})))"
    )
    stage = {"uses": "net-program", "params": {"unwatched": True, "code": code}}
    project.pipeline(
        [
            {
                **stage,
                "name": "strict",
                "outputs": ["strict.txt"],
                "network": {"isolation": "strict"},
            },
            {
                **stage,
                "name": "auto",
                "outputs": ["auto.txt"],
                "params": {"unwatched": True, "code": "print('hi')"},
            },
        ]
    )
    code_, summary, err = run(project, "-k")
    assert code_ == 0, (summary, err)
    st = by_name(summary)
    assert (st["strict"]["status"], st["strict"]["network"]) == ("ok", "isolated")
    names, refused = project.read("strict.txt").splitlines()
    assert names == "[(1, 'lo')]" and refused != "0", (names, refused)
    assert listener2.received() == []
    assert st["auto"]["network"] == "guarded"  # the audit hook only: it says no more


@ROOT_ONLY
def test_strict_isolation_fails_a_stage_whose_hidden_program_tried_the_network(
    project: Project,
) -> None:
    """The namespace's counters catch what no audit hook saw: a program
    started without an audit event that tried an address beyond loopback
    (in a namespace the test made, so nothing leaves even if broken)."""
    swallow = f"import socket; print(socket.socket().connect_ex(('{TEST_NET}', 9)))"
    project.pipeline(
        [
            {
                "name": "hidden",
                "uses": "net-program",
                "outputs": ["h.txt"],
                "params": {"unwatched": True, "code": swallow},
                "network": {"isolation": "strict"},
            },
            {
                "name": "listed",
                "uses": "net-program",
                "outputs": ["l.txt"],
                "params": {"code": "print(1)"},
                "network": {"isolation": "strict", "allow": ["10.0.0.0/8"]},
            },
        ]
    )
    code, summary, _ = run(project, "-k", in_netns=True)
    assert code == 1
    st = by_name(summary)
    reason = st["hidden"]["reason"]
    assert st["hidden"]["status"] == "failed", st
    assert "network guard: stage 'hidden' (processor 'net-program') tried to reach" in reason
    assert "--allow-network hidden" in reason, reason
    reason = st["listed"]["reason"]
    assert st["listed"]["status"] == "failed" and "cannot let 10.0.0.0/8 in" in reason, reason


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or os.geteuid() != 0 or not shutil.which("ip"),
    reason="re-entering the host's namespace is a root's attack (Linux, with ip from iproute2)",
)
@pytest.mark.parametrize("method", METHODS)
def test_an_isolated_command_cannot_reenter_the_hosts_namespace(
    project: Project, method: str
) -> None:
    """As root, an isolated command that runs nsenter into the host's
    network namespace (by PID 1's or its runner's) is refused: it has no
    CAP_SYS_ADMIN to enter another namespace, and cannot gain it. Runs in a
    namespace the test made, so a broken guard still reaches nothing."""
    project.pipeline(
        [
            {
                "name": name,
                "uses": "shell",
                "outputs": [f"{name}.txt"],
                "params": {"cmd": f"nsenter --net=/proc/{pid}/ns/net ip -o link > {{output}}"},
            }
            for name, pid in (("pid1", "1"), ("runner", "$PPID"))
        ]
    )
    code, summary, _ = run(project, "-k", in_netns=True, PIPEKIT_NETNS=method)
    assert code == 1
    for name in ("pid1", "runner"):
        st = by_name(summary)[name]
        assert st["status"] == "failed", st
        assert "nsenter" in st["reason"], st
        assert not (project.root / f"{name}.txt").exists()
