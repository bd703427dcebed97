"""The network guard of Python processors (DESIGN §8).

While a processor runs, its thread (and every thread it starts, and every
process it forks) runs under a :class:`Guard`: an audit hook
(``sys.addaudithook``, installed once per process) refuses, before the
system call is made,

- socket connections, datagrams and binds to addresses outside the stage's
  allowed set (default: loopback, ``127.0.0.0/8``, ``::1`` and
  ``localhost``; ``AF_UNIX`` and ``AF_NETLINK`` sockets are always
  allowed), judging a socket by the family the kernel gives its descriptor
  (``SO_DOMAIN``), not by its Python object, whose ``family`` a subclass
  may override;
- name look-ups of names outside it;
- starting a program not prepared with :func:`pipekit.isolate_command`
  (a program is out of the hook's sight).

A refusal raises :class:`pipekit.NetworkRefused` (a ``PermissionError``)
and is kept on the guard, so the stage fails even when the processor
catches it. The hook acts only in a thread that holds an active guard:
the runner's own threads are never blocked, and :func:`trusted` lifts it
for the runner's work on a processor's behalf (checkpoint store calls,
observer hooks).

What raises no audit event (C code bypassing Python's ``socket`` module,
``ctypes``, ``_posixsubprocess.fork_exec``) is out of the hook's sight:
commands run through :func:`pipekit.isolate_command`, and with
``network.isolation = "strict"`` the processor's own thread, get a network
namespace instead (:mod:`pipekit.isolation._namespaces`). The run record's
mode says which held (:class:`Guard`).
"""

from __future__ import annotations

import contextvars
import socket as _socket
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NoReturn

from .._allow_list import LOOPBACK, Rule, check_allow_list, ip_of, parse_rule, rules_of
from ..errors import NetworkRefused

__all__ = [
    "LOOPBACK",
    "Rule",
    "Policy",
    "Guard",
    "parse_rule",
    "check_allow_list",
    "install",
    "guarded",
    "lifted",
    "current",
]

_THREAD_ATTR = "_pipekit_netguard"


class Policy:
    """What one stage may reach: the allow list, or everything."""

    __slots__ = ("allow_all", "entries", "isolation", "processor", "rules", "stage")

    def __init__(
        self,
        stage: str,
        processor: str,
        entries: Sequence[str] = (LOOPBACK,),
        *,
        allow_all: bool = False,
        isolation: str = "auto",
    ) -> None:
        self.stage = stage
        self.processor = processor
        self.entries = list(dict.fromkeys(entries))
        self.rules = [r for e in self.entries for r in rules_of(e)]
        self.allow_all = allow_all
        self.isolation = isolation

    def to_json(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "processor": self.processor,
            "allow": self.entries,
            "allow_all": self.allow_all,
            "isolation": self.isolation,
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Policy:
        return cls(
            doc["stage"],
            doc["processor"],
            doc["allow"],
            allow_all=doc["allow_all"],
            isolation=doc["isolation"],
        )

    def describe(self) -> str:
        return ", ".join(self.entries) if self.entries else "nothing"

    def allows_ip(self, ip: Any, port: int | None) -> bool:
        return any(r.matches_ip(ip, port) for r in self.rules)

    def allows_name(self, name: str, port: int | None) -> bool:
        name = name.lower().rstrip(".")
        return any(r.matches_name(name, port) for r in self.rules)

    def how_to_allow(self, target: str | None) -> str:
        add = (
            f"add {target!r} to network.allow of stage {self.stage!r} or of the pipeline, "
            if target
            else ""
        )
        return (
            f"To allow it: {add}set allow_network = true on stage {self.stage!r}, "
            f"or run `pipekit run --allow-network {self.stage}`."
        )


class Guard:
    """The guard of one attempt of one stage: its policy, what it refused,
    the commands it let start, and the network mode for the stage record,
    the weakest guarantee of what the stage ran: ``allowed``, ``unguarded``
    (a command ran with the host's network), ``guarded`` (the audit hook
    only) or ``isolated`` (the processor's thread was in a namespace)."""

    __slots__ = ("approved", "busy", "isolate", "mode", "policy", "resolved", "violations")

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.violations: list[str] = []
        self.approved: set[tuple[Any, ...]] = set()
        self.resolved: dict[Any, set[int | None]] = {}
        self.busy: int | None = None  # the thread doing the guard's own look-up
        self.isolate = not policy.allow_all and policy.isolation == "strict"
        """Whether the processor's thread runs in a network namespace."""
        self.mode = "allowed" if policy.allow_all else "isolated" if self.isolate else "guarded"

    def approve(self, argv: Sequence[Any]) -> None:
        """Let the program ``argv`` start (it was isolated, or knowingly not)."""
        self.approved.add(tuple(argv))

    def note_mode(self, mode: str) -> None:
        """Record how a command ran: one run with the host's network
        (``unguarded``) makes the stage's mode ``unguarded``; a command in a
        namespace changes nothing (the processor's own code is no safer)."""
        if mode == "unguarded" and self.mode != "allowed":
            self.mode = mode

    def refuse(
        self, tried: str, target: str | None, *, hint: str | None = None, outside: bool = True
    ) -> NoReturn:
        """Record and raise the refusal of what the processor ``tried``."""
        p = self.policy
        where = f", outside the stage's allowed network ({p.describe()})" if outside else ""
        msg = (
            f"network guard: stage {p.stage!r} (processor {p.processor!r}) tried to {tried}"
            f"{where}. " + (hint or p.how_to_allow(target))
        )
        self.violations.append(msg)
        raise NetworkRefused(msg)


_TRUSTED: Any = object()
_current: contextvars.ContextVar[Any] = contextvars.ContextVar("pipekit_netguard", default=None)
_installed = False
_install_lock = threading.Lock()


def current() -> Guard | None:
    """The guard in force in this thread, if any."""
    g = _in_force()
    return None if g is _TRUSTED else g  # type: ignore[no-any-return]


def _in_force() -> Any:
    """This thread's guard (its context's, else the one it inherited from
    the thread that started it), :data:`_TRUSTED`, or None."""
    g = _current.get()
    return g if g is not None else getattr(threading.current_thread(), _THREAD_ATTR, None)


@contextmanager
def guarded(policy: Policy) -> Iterator[Guard]:
    """Run the body (a processor) under a new guard for ``policy`` (the
    audit hook; :func:`pipekit.isolation._namespaces.guarded` adds strict
    isolation)."""
    install()
    g = Guard(policy)
    token = _current.set(g)
    try:
        yield g
    finally:
        _current.reset(token)


@contextmanager
def lifted() -> Iterator[None]:
    """Lift the guard for the runner's own work in a processor's thread
    (the audit hook only: :func:`pipekit.isolation.trusted` also steps out
    of a strict stage's namespace)."""
    token = _current.set(_TRUSTED)
    try:
        yield
    finally:
        _current.reset(token)


def install() -> None:
    """Install the audit hook (once per process; it cannot be removed) and
    make threads inherit the guard of the thread that starts them."""
    global _installed
    with _install_lock:
        if _installed:
            return
        original_start = threading.Thread.start

        def start(self: threading.Thread) -> None:
            g = current()
            if g is not None:
                setattr(self, _THREAD_ATTR, g)
            original_start(self)

        start.__doc__ = original_start.__doc__
        threading.Thread.start = start  # type: ignore[method-assign]
        sys.addaudithook(_hook)
        _installed = True


# -- the audit hook ------------------------------------------------------------

_VERBS = {
    "socket.connect": "connect to",
    "socket.sendto": "send a datagram to",
    "socket.sendmsg": "send a message to",
    "socket.bind": "listen on (bind)",
}
_SOCKET_EVENTS = frozenset(_VERBS)
_LOOKUP_EVENTS = frozenset(
    {"socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyaddr", "socket.getnameinfo"}
)
_REVERSE = frozenset({"socket.gethostbyaddr", "socket.getnameinfo"})
_EXEC_EVENTS = frozenset(
    {"subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.startfile"}
)
_WATCHED = _SOCKET_EVENTS | _LOOKUP_EVENTS | _EXEC_EVENTS
_ARGV_INDEX = {"subprocess.Popen": 1, "os.exec": 1, "os.posix_spawn": 1, "os.spawn": 2}
_LOCAL_FAMILIES = frozenset(
    f for f in (getattr(_socket, "AF_UNIX", None), getattr(_socket, "AF_NETLINK", None)) if f
)
_IP_FAMILIES = frozenset({_socket.AF_INET, _socket.AF_INET6})
_SO_DOMAIN = getattr(_socket, "SO_DOMAIN", -1)  # Linux; elsewhere getsockopt fails


def _hook(event: str, args: tuple[Any, ...]) -> None:
    if event not in _WATCHED:
        return
    g = _in_force()
    if g is None or g is _TRUSTED or g.policy.allow_all or g.busy == threading.get_ident():
        return
    if event in _SOCKET_EVENTS:
        _on_socket(g, event, args)
    elif event in _LOOKUP_EVENTS:
        _on_lookup(g, event, args)
    else:
        _on_exec(g, event, args)


def _to_port(value: Any) -> int | None:
    if value is None or isinstance(value, int):
        return value
    text = _text(value)
    if text.isdigit():
        return int(text)
    try:
        return _socket.getservbyname(text)
    except OSError:
        return None


def _text(value: Any) -> str:
    """A host or port from an audit event's arguments (str or bytes), as text."""
    return value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)


def _hostport(host: str, port: int | None) -> str:
    if port is None:
        return host
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _allowed_address(g: Guard, host: Any, port: int | None) -> bool:
    host = _text(host)
    ip = ip_of(host)
    if ip is None:
        return g.policy.allows_name(host, port) if host else False
    if g.policy.allows_ip(ip, port):
        return True
    ports = g.resolved.get(ip)
    return ports is not None and (None in ports or port in ports)


def _real_family(sock: Any) -> Any:
    """The address family of ``sock`` that decides what a call on it may
    reach, whatever its Python object says (a subclass may override
    ``family``, or ``getsockopt``, so the socket type's own members are
    used): the family the kernel gives its descriptor (``SO_DOMAIN``) and
    the one the socket type parses addresses with must both be local for
    the socket to count as local; else the one that is not local."""
    parsed = _socket.SocketType.family.__get__(sock)  # type: ignore[attr-defined]
    try:
        kernel = _socket.SocketType.getsockopt(sock, _socket.SOL_SOCKET, _SO_DOMAIN)
    except OSError:  # closed (the call fails too), or no SO_DOMAIN on this OS
        kernel = parsed
    return parsed if kernel in _LOCAL_FAMILIES else kernel


def _family_name(family: Any) -> str:
    try:
        return _socket.AddressFamily(family).name
    except ValueError:
        return str(family)


def _on_socket(g: Guard, event: str, args: tuple[Any, ...]) -> None:
    sock, address = args[0], args[1]
    if address is None:  # sendmsg on a connected socket: its connect was checked
        return
    family = _real_family(sock)
    if family in _LOCAL_FAMILIES:
        return
    verb = _VERBS[event]
    if family not in _IP_FAMILIES:
        g.refuse(f"{verb} {address!r} over a socket of family {_family_name(family)}", None)
    if not isinstance(address, tuple) or len(address) < 2:
        g.refuse(f"{verb} {address!r}", None)
    host, port = address[0], _to_port(address[1])
    if event == "socket.bind" and host in ("", "0.0.0.0", "::"):
        if not _allowed_address(g, "0.0.0.0" if host in ("", "0.0.0.0") else "::", port):
            g.refuse(
                f"listen on every interface ({_hostport(host or '0.0.0.0', port)})",
                None,
                hint="Bind to 127.0.0.1 instead, or allow the stage's network: "
                + g.policy.how_to_allow(None).removeprefix("To allow it: "),
            )
        return
    if not _allowed_address(g, host, port):
        target = _hostport(_text(host), port)
        g.refuse(f"{verb} {target}", target)


def _on_lookup(g: Guard, event: str, args: tuple[Any, ...]) -> None:
    if event == "socket.getaddrinfo":
        host, port = args[0], _to_port(args[1])
    elif event == "socket.getnameinfo":
        sockaddr = args[0]
        host = sockaddr[0] if isinstance(sockaddr, tuple) and sockaddr else sockaddr
        port = _to_port(sockaddr[1]) if isinstance(sockaddr, tuple) and len(sockaddr) > 1 else None
    else:
        host, port = args[0], None
    if host is None:  # a passive look-up (for bind): no name to resolve
        return
    host = _text(host)
    if ip_of(host) is not None:
        # (getaddrinfo, gethostbyname: nothing is looked up; connect checks it)
        if event in _REVERSE and not _allowed_address(g, host, port):
            g.refuse(f"look up the name of {host}", host)
        return
    name = host.lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return  # answered on this machine; connecting is checked by address
    if not g.policy.allows_name(name, port):
        if port is not None and g.policy.allows_name(name, None):
            g.refuse(f"look up the name {host!r} for port {port}", _hostport(host, port))
        g.refuse(f"look up the name {host!r}", host)
    _remember(g, host, port)


def _remember(g: Guard, host: str, port: int | None) -> None:
    """An allowed name: remember what it resolves to, so that connecting to
    those addresses is allowed too (with the rule's port)."""
    name = host.lower().rstrip(".")
    rule_ports = {r.port for r in g.policy.rules if r.matches_name(name, port)}
    g.busy = threading.get_ident()
    try:
        infos = _socket.getaddrinfo(host, None)
    except OSError:
        return  # the caller's own look-up fails the same way
    finally:
        g.busy = None
    for info in infos:
        ip = ip_of(str(info[4][0]))
        if ip is not None:
            g.resolved.setdefault(ip, set()).update(rule_ports)


def _on_exec(g: Guard, event: str, args: tuple[Any, ...]) -> None:
    index = _ARGV_INDEX.get(event)  # (os.system, os.startfile: one string)
    argv = [args[0]] if index is None else args[index]
    try:
        key = tuple(argv)
    except TypeError:
        key = (argv,)
    if key in g.approved:
        return
    shown = " ".join(str(a) for a in key)
    if len(shown) > 120:
        shown = shown[:117] + "..."
    p = g.policy
    g.refuse(
        f"start the program `{shown}`, which the guard cannot watch",
        None,
        outside=False,
        hint=(
            "Start programs through pipekit.isolate_command(argv), which runs them "
            f"without network; or set allow_network = true on stage {p.stage!r}, "
            f"or run `pipekit run --allow-network {p.stage}`."
        ),
    )
