"""Processors and a backend that use the network, for the network guard's
tests (loaded with PIPEKIT_PLUGIN_MODULES=...,pipekit_nettest).

Every address they use comes from the test: loopback listeners, or
addresses that a test only tries inside a network namespace it made."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import pipekit


@attrs.define
class ConnectParams:
    host: str = ""
    port: int = 0
    lookup: str = ""
    """A name to look up first (socket.getaddrinfo)."""
    swallow: bool = False
    """Catch the error and succeed anyway (the guard must still fail the stage)."""
    in_thread: bool = False
    """Connect from a thread the processor starts."""


class Connect(pipekit.Stage):
    """Look up a name and/or connect to host:port and send a line; write
    what happened to output 0."""

    name = "net-connect"
    version = "1"
    Params = ConnectParams

    def run(self, ctx: pipekit.StageContext) -> None:
        p: ConnectParams = ctx.params
        result: list[str] = []

        def work() -> None:
            try:
                if p.lookup:
                    infos = socket.getaddrinfo(p.lookup, p.port or 80, type=socket.SOCK_STREAM)
                    result.append(f"resolved {infos[0][4][0]}")
                if p.host:
                    with socket.create_connection((p.host, p.port), timeout=5) as s:
                        s.sendall(f"hello from {ctx.stage_name}\n".encode())
                    result.append("connected")
            except OSError as exc:
                if not p.swallow:
                    raise
                result.append(f"swallowed {type(exc).__name__}")

        if p.in_thread:
            errors: list[BaseException] = []

            def target() -> None:
                try:
                    work()
                except BaseException as exc:
                    errors.append(exc)

            t = threading.Thread(target=target)
            t.start()
            t.join()
            if errors:
                raise errors[0]
        else:
            work()
        ctx.outputs[0].write_text("\n".join(result) + "\n")


@attrs.define
class ProgramParams:
    code: str = "print('hi')"
    isolated: bool = False
    """Start it through pipekit.isolate_command."""
    popen: bool = False
    """With IsolatedCommand.popen() rather than subprocess on its argv."""
    unwatched: bool = False
    """With libc's system() through ctypes: no audit event, like
    ``_posixsubprocess.fork_exec``, so the audit hook cannot see it."""


class Program(pipekit.Stage):
    """Start a Python program; write its output to output 0."""

    name = "net-program"
    version = "1"
    Params = ProgramParams

    def run(self, ctx: pipekit.StageContext) -> None:
        argv = [sys.executable, "-c", ctx.params.code]
        if ctx.params.unwatched:
            self._unwatched(argv, ctx.outputs[0])
            return
        cmd = pipekit.isolate_command(argv) if ctx.params.isolated else None
        if cmd is not None and ctx.params.popen:
            proc = cmd.popen(stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            stdout, stderr = proc.communicate()
            returncode = proc.returncode
        else:
            out = subprocess.run(cmd.argv if cmd else argv, capture_output=True, text=True)
            stdout, stderr, returncode = out.stdout, out.stderr, out.returncode
        if cmd is not None:
            cmd.check()
        if returncode != 0:
            raise RuntimeError(f"program failed: {stderr.strip().splitlines()[-1:]}")
        ctx.outputs[0].write_text(stdout)

    @staticmethod
    def _unwatched(argv: list[str], output: Path) -> None:
        import ctypes
        import shlex

        line = " ".join(shlex.quote(a) for a in argv) + " > " + shlex.quote(str(output))
        status = ctypes.CDLL(None).system(line.encode())
        if status != 0:
            raise RuntimeError(f"program failed: status {status}")


# -- a checkpoint store on a real Redis server, over a minimal RESP client ------


class _Resp:
    def __init__(self, host: str, port: int) -> None:
        self.addr = (host, port)
        self.lock = threading.Lock()
        self.sock: socket.socket | None = None
        self.connections = 0

    def call(self, *args: Any) -> Any:
        with self.lock:
            if self.sock is None:
                self.sock = socket.create_connection(self.addr, timeout=10)
                self.file = self.sock.makefile("rb")
                self.connections += 1
            parts = [a if isinstance(a, bytes) else str(a).encode() for a in args]
            payload = b"*%d\r\n" % len(parts) + b"".join(
                b"$%d\r\n%s\r\n" % (len(p), p) for p in parts
            )
            self.sock.sendall(payload)
            return self._read()

    def _read(self) -> Any:
        line = self.file.readline()
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self.file.read(n + 2)[:-2]
        if kind == b"*":
            return [self._read() for _ in range(int(rest))]
        raise RuntimeError(f"bad reply {line!r}")


class RespCheckpointStore:
    def __init__(self, url: str) -> None:
        host, _, port = url.rpartition(":")
        self.r = _Resp(host, int(port))

    def put(self, namespace: str, id: str, data: bytes, *, fence: Any = None) -> None:
        self.r.call("SET", f"cp:{namespace}:{id}", data)
        self.r.call("RPUSH", "log", f"put {namespace} {id}")

    def get(self, namespace: str, id: str) -> bytes | None:
        self.r.call("RPUSH", "log", f"get {namespace} {id}")
        return self.r.call("GET", f"cp:{namespace}:{id}")  # type: ignore[no-any-return]

    def list(self, namespace: str) -> list[str]:
        keys = self.r.call("KEYS", f"cp:{namespace}:*")
        return sorted(k.decode().rpartition(":")[2] for k in keys)

    def delete(self, namespace: str, id: str) -> None:
        self.r.call("DEL", f"cp:{namespace}:{id}")
        self.r.call("RPUSH", "log", f"delete {namespace} {id}")


def _checkpoints(options: dict[str, Any], *, state_dir: Path) -> Any:
    return RespCheckpointStore(options["url"])


def _locks(options: dict[str, Any], *, state_dir: Path) -> Any:
    from pipekit.stores import _file_factories as file_factories

    RespCheckpointStore(options["url"]).r.call("RPUSH", "log", "locks")
    return file_factories.lock_backend({}, state_dir=state_dir)


def _idempotency(options: dict[str, Any], *, state_dir: Path) -> Any:
    from pipekit.stores import _file_factories as file_factories

    return file_factories.idempotency_store({}, state_dir=state_dir)


@pipekit.hookimpl
def register_stages(register: Callable[[Any], None]) -> None:
    register(Connect())
    register(Program())


@pipekit.hookimpl
def register_lock_backends(register: Callable[[str, Any], None]) -> None:
    register("resp-test", _locks)


@pipekit.hookimpl
def register_idempotency_stores(register: Callable[[str, Any], None]) -> None:
    register("resp-test", _idempotency)


@pipekit.hookimpl
def register_checkpoint_stores(register: Callable[[str, Any], None]) -> None:
    register("resp-test", _checkpoints)
