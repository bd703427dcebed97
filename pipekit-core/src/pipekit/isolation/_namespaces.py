"""Commands without network: Linux network namespaces for the programs a
processor starts (the ``shell`` stage's commands, and any processor's that
uses :func:`pipekit.isolate_command`).

Each thread that runs commands gets, on first use, a network namespace of
its own with nothing but its own loopback, up; every command of that
thread starts in it, so the kernel gives it no route beyond loopback and
the host's loopback services are out of its reach. Two ways to make one:

- **setns** (as root, the default there): the thread makes the namespace
  with ``unshare(CLONE_NEWNET)`` and goes back to the host's with
  ``setns`` (a namespace belongs to a thread: the runner's other threads
  keep the host's network). Its **forker** thread lives in it and has
  dropped, for good, the capabilities that would let a program leave it
  (:data:`_CAPABILITIES`); :meth:`IsolatedCommand.popen` has it start the
  command, so that a root command's ``nsenter --net=/proc/1/ns/net`` is
  refused.
- **nsenter** (other users, or ``PIPEKIT_NETNS=nsenter``): a **holder**
  process made with ``unshare --net`` (as root) or ``unshare --net
  --map-root-user`` (a user namespace) holds it; commands enter it
  through ``nsenter``. A holder ends with its thread, or with the runner
  (its stdin closes).

A command started from :attr:`IsolatedCommand.argv` always goes through
``nsenter`` (with setns: by the namespace's descriptor,
``/proc/<runner>/fd/<n>``) and, as root without a user namespace, through
``setpriv``, which drops the same capabilities. :func:`isolate_thread`
moves a processor's own thread into its namespace (``network.isolation =
"strict"``): all it then does and starts, through any API, has only that
loopback.

Since a thread runs one stage at a time, the namespace's counters
(``/proc/.../net/snmp``), read before and after a command, tell what it
tried: routes it could not get (an address beyond loopback, a DNS server)
and connections refused on its own loopback (a service on the host).

Where no namespace can be made (not Linux, not root and no
``unshare``/``nsenter``, no permission), commands run with the host's
network (``unguarded``, with a warning) unless the stage's
``network.isolation`` is ``"required"``: then the stage fails. With
``"off"`` commands always run with the host's network.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import queue
import shutil
import socket
import struct
import subprocess
import sys
import threading
import weakref
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

from ..errors import NetworkRefused, NonRetryable
from . import _guard as netguard
from . import _sentinel as sentinel
from ._capabilities import (
    CLONE_NEWNET,
    Unavailable,
    drop_capabilities,
    libc_calls,
    os_error,
    without_capabilities,
)
from ._counters import Counters, close_fds

__all__ = ["IsolatedCommand", "isolate_command", "probe", "Unavailable"]

log = logging.getLogger("pipekit.netns")

# Brings the namespace's loopback up (SIOCGIFFLAGS, SIOCSIFFLAGS | IFF_UP),
# says "ready", then waits for its stdin to close.
_HOLDER_CODE = r"""
import fcntl, signal, socket, struct, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
flags = struct.unpack("16sh22x", fcntl.ioctl(s, 0x8913, struct.pack("16sh22x", b"lo", 0)))[1]
fcntl.ioctl(s, 0x8914, struct.pack("16sh22x", b"lo", flags | 1))
print("ready", flush=True)
sys.stdin.buffer.read()
"""


class _Holder:
    """A process holding a network namespace with only loopback, up."""

    method = "nsenter"

    def __init__(self, proc: subprocess.Popen[bytes], userns: bool, nsenter: str) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.userns = userns
        self.nsenter = nsenter
        fds: list[int] = []  # the counters' files, closed with the holder
        self._counters = Counters(f"/proc/{self.pid}/net", fds)
        self._finalizer = weakref.finalize(self, _stop, proc, fds)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wrap(self, argv: Sequence[Any]) -> list[Any]:
        enter = [self.nsenter, "--target", str(self.pid), "--net"]
        if self.userns:  # capabilities of the user namespace only
            return [*enter, "--user", "--preserve-credentials", "--", *argv]
        return [*enter, "--", *without_capabilities(shutil.which("setpriv")), *argv]

    @property
    def counters(self) -> Counters:
        return self._counters

    def close(self) -> None:
        self._finalizer()


class _ThreadNet:
    """A network namespace with only loopback, up, made by this thread with
    ``unshare(CLONE_NEWNET)``; the thread is back in the namespace it was
    in when this returns. Its commands are started by a thread of its own that
    lives in the namespace without the capabilities to leave it (see
    :func:`_forker`), so that a command, even as root, cannot enter the
    host's namespace again."""

    method = "setns"

    def __init__(self) -> None:
        fds: list[int] = []  # closed when this is closed or collected
        self._requests: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._finalizer = weakref.finalize(self, _release, fds, self._requests)
        # where the thread lives (the host's namespace, or the one it was
        # moved into or born in): it goes back there
        fds.append(os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC))
        if libc_calls().unshare(CLONE_NEWNET) != 0:
            raise os_error("unshare(CLONE_NEWNET)")
        try:
            self.ns_fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            fds.append(self.ns_fd)
            _loopback_up()
            # Opened in the namespace, its counter files keep showing that
            # namespace's counters: read without entering it again.
            self._counters = Counters("/proc/thread-self/net", fds)
        finally:
            if libc_calls().setns(fds[0], CLONE_NEWNET) != 0:
                raise OSError(f"cannot return to the thread's namespace: {os_error('setns')}")
        self.pid = os.getpid()  # a forked child has no forker: it makes its own
        threading.Thread(target=_forker, args=(self.ns_fd, self._requests), daemon=True).start()
        try:
            self.start(lambda: None)  # the forker is in place, or why not
        except Unavailable:
            self.close()
            raise

    def start(self, call: Any) -> Any:
        """``call()`` in the namespace's forker thread (a child it forks is
        born in the namespace, without the capabilities to leave it): what
        it returned, or its exception raised here."""
        done = threading.Event()
        box: list[Any] = []
        self._requests.put((call, box, done))
        try:
            done.wait()
        except BaseException:  # interrupted: what the call started must not live on unseen
            done.wait()
            if not box[0] and isinstance(box[1], subprocess.Popen):
                box[1].kill()
                box[1].wait()
            raise
        if box[0]:
            raise box[1]
        return box[1]

    def alive(self) -> bool:
        return self._finalizer.alive and self.pid == os.getpid()

    def wrap(self, argv: Sequence[Any]) -> list[Any]:
        nsenter = shutil.which("nsenter")
        if not nsenter:
            raise Unavailable(
                "nsenter not found (install util-linux): start the command with "
                "IsolatedCommand.popen() instead of its argv"
            )
        enter = [nsenter, f"--net=/proc/{os.getpid()}/fd/{self.ns_fd}", "--"]
        return [*enter, *without_capabilities(shutil.which("setpriv")), *argv]

    @property
    def counters(self) -> Counters:
        return self._counters

    def close(self) -> None:
        self._finalizer()


def _forker(ns_fd: int, requests: queue.SimpleQueue[Any]) -> None:
    """The thread that starts a namespace's commands: it enters the
    namespace, drops :data:`_CAPABILITIES` for good, then runs what it is
    handed until handed None. Trusted: the guard of the stage that handed
    a command has approved it."""
    _local.pinned = True  # trusted() must not take it out of its namespace
    failure: Unavailable | None = None  # raised for every call
    with netguard.lifted():
        try:
            if libc_calls().setns(ns_fd, CLONE_NEWNET) != 0:
                raise os_error("setns")
            drop_capabilities()
        except OSError as exc:
            failure = Unavailable(f"cannot start commands in the namespace: {exc}")
        for call, box, done in iter(requests.get, None):
            try:
                if failure is not None:
                    raise failure
                box[:] = [False, call()]
            except BaseException as exc:
                box[:] = [True, exc]
            done.set()


def _release(fds: list[int], requests: queue.SimpleQueue[Any]) -> None:
    requests.put(None)  # the forker ends
    close_fds(fds)


def _loopback_up() -> None:
    """Bring up ``lo`` in the calling thread's network namespace
    (SIOCGIFFLAGS, SIOCSIFFLAGS | IFF_UP)."""
    # Neither making a socket nor ioctl is an event the guard watches; and
    # trusted() would take the thread out of the namespace being set up.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sh22x", b"lo", 0)
        flags = struct.unpack("16sh22x", fcntl.ioctl(s, 0x8913, req))[1]
        fcntl.ioctl(s, 0x8914, struct.pack("16sh22x", b"lo", flags | 1))


def _stop(proc: subprocess.Popen[bytes], fds: list[int]) -> None:
    """End a holder: its stdin closes, so it exits (else it is killed)."""
    close_fds(fds)
    try:
        proc.communicate(timeout=5)
    except Exception:
        with contextlib.suppress(Exception):
            proc.kill()
            proc.wait(timeout=5)


_local = threading.local()
_lock = threading.Lock()
_unavailable: str | None = None


def _start_holder() -> _Holder:
    """A holder process (the nsenter method): as root, in a plain network
    namespace, else in a user namespace too."""
    _check_linux()
    unshare, nsenter = shutil.which("unshare"), shutil.which("nsenter")
    if not unshare or not nsenter:
        missing = " and ".join(n for n, p in (("unshare", unshare), ("nsenter", nsenter)) if not p)
        raise Unavailable(f"{missing} not found (install util-linux)")
    variants = [["--net", "--map-root-user"]]
    if os.geteuid() == 0:
        variants.insert(0, ["--net"])
    errors = []
    for flags in variants:
        argv = [unshare, *flags, "--", sys.executable, "-I", "-S", "-c", _HOLDER_CODE]
        with netguard.lifted():
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a terminal's ^C is the runner's to handle
            )
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if line == b"ready\n":
            proc.stdout.close()
            return _Holder(proc, "--map-root-user" in flags, nsenter)
        err = (line + proc.communicate()[0]).decode("utf-8", "replace").strip().splitlines()
        errors.append(f"`unshare {' '.join(flags)}`: {err[-1] if err else 'failed'}")
    raise Unavailable("; ".join(errors))


def _check_linux() -> None:
    if not sys.platform.startswith("linux"):
        raise Unavailable(f"network namespaces are a Linux feature (this is {sys.platform})")


def _method() -> str:
    """``setns`` or ``nsenter``: the environment's choice, else setns as root."""
    chosen = os.environ.get("PIPEKIT_NETNS", "auto").strip().lower() or "auto"
    if chosen not in ("auto", "setns", "nsenter"):
        log.warning("PIPEKIT_NETNS=%r is not one of auto, setns, nsenter: using auto", chosen)
        chosen = "auto"
    if chosen == "auto":
        chosen = "setns" if sys.platform.startswith("linux") and os.geteuid() == 0 else "nsenter"
    return chosen


def _holder() -> _Holder | _ThreadNet:
    """This thread's namespace (made on first use, remade if its holder
    died)."""
    global _unavailable
    if _unavailable is not None:
        raise Unavailable(_unavailable)
    h: _Holder | _ThreadNet | None = getattr(_local, "namespace", None)
    if h is not None and h.alive():
        return h
    try:
        if _method() == "setns":
            _check_linux()
            try:
                h = _ThreadNet()
            except OSError as exc:
                raise Unavailable(f"cannot make a network namespace: {exc}") from None
        else:
            h = _start_holder()
    except Unavailable as exc:
        _unavailable = str(exc)
        raise
    except OSError as exc:
        _unavailable = f"cannot start unshare: {exc}"
        raise Unavailable(_unavailable) from None
    _local.namespace = h
    return h


def probe() -> str | None:
    """None when commands can be isolated here, else why not."""
    try:
        _holder()
    except Unavailable as exc:
        return str(exc)
    return None


class _Isolation(NamedTuple):
    """A thread moved into a namespace by :func:`isolate_thread`: the
    namespace, and its counters when the thread moved in."""

    namespace: _ThreadNet
    before: dict[str, int]


def isolate_thread() -> Any:
    """Move the calling thread into its network namespace (only its own
    loopback, up): every socket it makes, thread and process it starts,
    through any API, has no network beyond that loopback. Returns what
    :func:`restore_thread` takes to move it back. Raises :class:`Unavailable`
    without the ``setns`` method (root on Linux): a thread of a process of
    several threads cannot enter a user namespace."""
    before: _Isolation | None = getattr(_local, "isolation", None)
    if _method() != "setns":
        raise Unavailable(
            "a thread can move into a network namespace only as root (the setns method; "
            f"PIPEKIT_NETNS={os.environ.get('PIPEKIT_NETNS', 'auto')!r}, uid {os.geteuid()})"
        )
    namespace = _holder()
    if not isinstance(namespace, _ThreadNet):  # (a holder process: nsenter method)
        raise Unavailable("a thread can move only into a namespace it made (setns method)")
    if before is not None and before.namespace is namespace:
        return before
    _host_fd()  # known before the thread leaves it
    if libc_calls().setns(namespace.ns_fd, CLONE_NEWNET) != 0:
        raise Unavailable(f"cannot enter the network namespace: {os_error('setns')}")
    _local.isolation = _Isolation(namespace, namespace.counters.read())
    return before


_host: list[int] = []  # a descriptor of the host's network namespace, once known


def _host_fd() -> int:
    """The host's network namespace (the one of a runner thread that was
    never moved), opened once and kept for the process's life."""
    with _lock:
        if not _host:
            _host.append(os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC))
    return _host[0]


def restore_thread(token: Any) -> int:
    """Undo :func:`isolate_thread` (``token`` is what it returned): the
    thread is back where it was. Returns how many times the namespace was
    asked, while the thread was in it, for an address beyond loopback (by
    the thread, or anything it started)."""
    current: _Isolation | None = getattr(_local, "isolation", None)
    if current is None or current is token:
        return 0
    fd = _host[0] if token is None else token.namespace.ns_fd
    if libc_calls().setns(fd, CLONE_NEWNET) != 0:
        raise OSError(f"cannot leave the network namespace: {os_error('setns')}")
    _local.isolation = token
    return current.namespace.counters.read()["beyond"] - current.before["beyond"]


@contextlib.contextmanager
def host_network() -> Iterator[None]:
    """The body runs with the host's network (the runner's own work in a
    processor's thread: see :func:`pipekit.isolation._guard.trusted`), where the
    thread was moved into a namespace or was born in one (a thread that a
    moved thread started: a processor's own thread pool, or the record
    loop's checkpoint thread). A no-op for a thread in the host's
    namespace, or one that lives in a namespace on purpose (a forker)."""
    current: _Isolation | None = getattr(_local, "isolation", None)
    if current is None and (not _host or getattr(_local, "pinned", False)):
        yield
        return
    here = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if os.fstat(here).st_ino == os.fstat(_host[0]).st_ino:
            yield
            return
        if libc_calls().setns(_host[0], CLONE_NEWNET) != 0:
            raise OSError(f"cannot return to the host's network namespace: {os_error('setns')}")
        _local.isolation = None
        try:
            yield
        finally:
            _local.isolation = current
            if libc_calls().setns(here, CLONE_NEWNET) != 0:
                raise OSError(f"cannot go back into the network namespace: {os_error('setns')}")
    finally:
        os.close(here)


class IsolatedCommand:
    """A command prepared by :func:`isolate_command`.

    Start it with :meth:`popen` (the fastest way), or start :attr:`argv`
    with ``subprocess`` yourself. ``mode`` is ``isolated`` (in a network
    namespace with only its own loopback), ``unguarded`` (no namespace
    could be made: the command has the host's network), ``allowed`` (the
    stage may use the network) or ``none`` (not run by a stage). After the
    command ended, :meth:`check` raises :class:`pipekit.NetworkRefused` if
    it tried to reach beyond loopback, and :meth:`explain` says why a
    failed command may have failed.
    """

    def __init__(self, argv: list[Any], mode: str, holder: Any, guard: Any, why: str = "") -> None:
        self.command = argv
        """The command as given."""
        self.mode = mode
        self.why = why
        self._holder = holder
        self._guard = guard
        self._argv: list[Any] | None = None if holder is not None else argv
        self._before: dict[str, int] | None = None  # the counters when it started
        self._after: dict[str, int] | None = None  # and when it was checked
        self._group: int | None = None  # its own process group, watched by the sentinel

    def _open(self) -> None:
        """The opening counter reading, taken just before the command starts."""
        if self._holder is not None and self._before is None:
            self._before = self._holder.counters.opening()

    @property
    def argv(self) -> list[Any]:
        """What to start with ``subprocess`` for the command to run as
        ``mode`` says: an isolated command is wrapped in ``nsenter``."""
        if self._argv is None:
            self._argv = self._holder.wrap(self.command)
            self._guard.approve(self._argv)
            self._open()
        return self._argv

    def popen(self, program: str | None = None, **kwargs: Any) -> subprocess.Popen[Any]:
        """Start the command: ``subprocess.Popen(argv, **kwargs)``, except
        that an isolated command is started straight into its namespace,
        with no ``nsenter``, where a thread can live there (as root: by the
        namespace's forker thread, without the capabilities to leave it).
        A command started in a session of its own (``start_new_session``)
        dies with its group when the runner dies, however (see
        :mod:`pipekit.isolation._sentinel`), until :meth:`check` says it ended.
        ``program``: the path of the command's program, found already (it
        spares the child a look-up along PATH, one exec tried per folder)."""
        holder = self._holder
        if not isinstance(holder, _ThreadNet):
            argv = self.argv
            if argv is self.command and program is not None:  # not wrapped in nsenter
                kwargs["executable"] = program
            proc = subprocess.Popen(argv, **kwargs)
        else:
            if program is not None:
                kwargs["executable"] = program
            self._open()
            proc = holder.start(lambda: subprocess.Popen(self.command, **kwargs))
        if kwargs.get("start_new_session"):
            self._group = proc.pid
            sentinel.watch_group(proc.pid)
        return proc

    def _delta(self) -> dict[str, int]:
        if self._holder is None or self._before is None:
            return {"beyond": 0, "loopback": 0}
        if self._after is None:
            self._after = self._holder.counters.closing(self._left_nothing())
        return {k: self._after[k] - self._before[k] for k in self._after}

    def _left_nothing(self) -> bool:
        """Whether the command led its own process group and nothing of
        that group runs any more."""
        if self._group is None:
            return False
        try:
            os.killpg(self._group, 0)
        except ProcessLookupError:
            return True
        except OSError:
            return False
        return False

    def check(self) -> None:
        """After the command ended: raise :class:`pipekit.NetworkRefused`
        if it tried to reach an address beyond loopback (an isolated
        command only)."""
        delta = self._delta()
        if self._group is not None:
            sentinel.forget_group(self._group)
            self._group = None
        if delta["beyond"] > 0:
            p = self._guard.policy
            msg = (
                f"network guard: the command of stage {p.stage!r} (processor {p.processor!r}) "
                f"tried to reach the network ({delta['beyond']} attempt(s) to an address beyond "
                "loopback, e.g. a server or a DNS look-up): it ran in a network namespace with "
                f"no network but its own loopback. {p.how_to_allow(None)}"
            )
            self._guard.violations.append(msg)
            raise NetworkRefused(msg)

    def explain(self) -> str | None:
        """Why a failed isolated command may have failed, or None."""
        if self.mode != "isolated" or self._delta()["loopback"] <= 0:
            return None
        p = self._guard.policy
        return (
            "network guard: the command ran in a network namespace of its own and was refused "
            "a connection on loopback: the host's loopback services (a database on "
            "127.0.0.1, say) cannot be reached from it. To let it reach them: set "
            f"allow_network = true on stage {p.stage!r}, or run "
            f"`pipekit run --allow-network {p.stage}`."
        )


_warned: set[str] = set()


def isolate_command(argv: Sequence[Any]) -> IsolatedCommand:
    """Prepare a program to start from a processor: start it with
    ``.popen(**popen_kwargs)`` (or start ``.argv`` instead of ``argv`` with
    ``subprocess``, as usual), then call ``.check()`` when it has ended.

    Under the network guard, the program runs in a network namespace with
    no network but its own loopback; where none can be made, it runs as it
    is (``mode == "unguarded"``, logged) unless the stage's
    ``network.isolation`` is ``"required"``, which raises
    :class:`pipekit.NonRetryable`. A stage with ``allow_network`` runs it as
    it is. Outside a stage (no guard), ``argv`` is returned unchanged.
    """
    argv = list(argv)
    g = netguard.current()
    if g is None:
        return IsolatedCommand(argv, "none", None, None)
    if g.policy.allow_all:
        g.approve(argv)
        return IsolatedCommand(argv, "allowed", None, g)
    if g.policy.isolation == "off":  # the pipeline chose speed over isolation
        return _unguarded(argv, g, 'network.isolation = "off"')
    try:
        holder = _holder()
    except Unavailable as exc:
        p = g.policy
        if p.isolation in ("required", "strict"):
            raise NonRetryable(
                f"network guard: stage {p.stage!r} requires its commands to run without "
                f"network (network.isolation = {p.isolation!r}), but no network namespace can "
                f"be made here: {exc}. Run pipekit as root or where user namespaces are "
                f'allowed, or set network.isolation = "auto".'
            ) from None
        key = f"{p.stage}\0{exc}"
        if key not in _warned:
            _warned.add(key)
            log.warning(
                "stage %s: its commands run with the host's network (no network namespace: %s)",
                p.stage,
                exc,
            )
        return _unguarded(argv, g, str(exc))
    g.note_mode("isolated")
    return IsolatedCommand(argv, "isolated", holder, g)


def _unguarded(argv: list[Any], g: Any, why: str) -> IsolatedCommand:
    g.approve(argv)
    g.note_mode("unguarded")
    return IsolatedCommand(argv, "unguarded", None, g, why)


@contextlib.contextmanager
def guarded(policy: netguard.Policy) -> Iterator[netguard.Guard]:
    """Run the body (a processor) under a new guard for ``policy``; with
    ``isolation = "strict"``, in this thread's network namespace too (see
    :func:`isolated`)."""
    with netguard.guarded(policy) as g, isolated(g):
        yield g


@contextlib.contextmanager
def isolated(g: netguard.Guard) -> Iterator[None]:
    """When ``g.isolate``: the body (this thread, the threads and processes
    it starts) in this thread's network namespace, which holds only its own
    loopback (:func:`pipekit.isolation._namespaces.isolate_thread`); what it tried beyond
    loopback becomes a violation of ``g``, checked before :func:`guarded`
    ends. A no-op otherwise. Raises :class:`pipekit.NonRetryable` where no
    namespace can be entered, or where the policy allows more than loopback
    (a namespace cannot let part of the network in)."""
    if not g.isolate:
        yield
        return
    p = g.policy
    beyond = [e for e in p.entries if not _names_loopback(e)]
    if beyond:
        raise NonRetryable(
            f'network guard: stage {p.stage!r} has network.isolation = "strict", which runs '
            "its processor in a network namespace with nothing but its own loopback, so "
            f"network.allow cannot let {', '.join(beyond)} in. Set network.isolation = "
            '"auto" or "required" on the stage to keep the allow list (the audit-hook '
            "guard), or allow_network = true."
        )
    try:
        token = isolate_thread()
    except Unavailable as exc:
        raise NonRetryable(
            f"network guard: stage {p.stage!r} requires its processor to run without network "
            f'(network.isolation = "strict"), but its thread cannot be moved into a '
            f"network namespace here: {exc}. Run pipekit as root on Linux, or set "
            'network.isolation = "required" (commands only) or "auto".'
        ) from None
    try:
        yield
    finally:
        message = _restore(g, restore_thread(token))
    if message:  # the body ended well, yet something in it tried
        raise NetworkRefused(message)


def _names_loopback(entry: str) -> bool:
    """Whether an allow-list entry names nothing but loopback (in a
    namespace: the namespace's own)."""
    loopback = [r.net for r in netguard.rules_of(netguard.LOOPBACK) if r.net is not None]
    return all(
        any(n.version == r.net.version and r.net.subnet_of(n) for n in loopback)
        if r.net is not None
        else r.name == "localhost"
        for r in netguard.rules_of(entry)
    )


def _restore(g: netguard.Guard, tried: int) -> str | None:
    """The violation of ``g`` when its isolated thread ``tried`` to reach
    beyond loopback (kept on the guard), or None."""
    if tried <= 0:
        return None
    p = g.policy
    message = (
        f"network guard: stage {p.stage!r} (processor {p.processor!r}) tried to reach "
        f"the network ({tried} attempt(s) to an address beyond loopback, from its own "
        "code or a program it started): it ran in a network namespace with no network "
        "but its own loopback. " + p.how_to_allow(None)
    )
    g.violations.append(message)
    return message


@contextlib.contextmanager
def trusted() -> Iterator[None]:
    """Lift the guard for the runner's own work in a processor's thread
    (e.g. a checkpoint store that talks to a server)."""
    with netguard.lifted(), host_network():  # out of a strict stage's namespace too
        yield
